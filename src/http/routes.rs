//! The routes, as a pure function of a [`Snapshot`], the method and the path: no sockets, so
//! the unit tests below cover every answer.

use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use super::Snapshot;
use crate::core::Role;
use crate::metrics::Metrics;

/// `Content-Type` of the plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of the JSON answers.
pub const JSON: &str = "application/json";
/// `Allow` of every route (and of a 405).
pub const ALLOW: &str = "GET, HEAD";

/// An answer: status, headers, body. `length` is the `Content-Length` of the GET answer, also
/// for HEAD, whose `body` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Allow`, on a 405.
    pub allow: Option<&'static str>,
    /// `Content-Length`: the length of the GET answer's body.
    pub length: usize,
    /// The body; empty for HEAD.
    pub body: Bytes,
}

/// A path the endpoint serves (whatever its method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'p> {
    /// `/v1/health`.
    Health,
    /// `/v1/status`.
    Status,
    /// `/v1/groups/GROUP/active`: 200 in role `active` with every steady unit up.
    Active(&'p str),
    /// `/v1/groups/GROUP/passive`: 200 in role `passive`.
    Passive(&'p str),
    /// `/v1/groups/GROUP/state`: the role as text.
    State(&'p str),
    /// `/metrics`: Prometheus metrics.
    Metrics,
}

impl<'p> Route<'p> {
    /// The route of a request's path (without its query), if it is one.
    pub fn of_path(path: &'p str) -> Option<Route<'p>> {
        match path {
            "/v1/health" => return Some(Route::Health),
            "/v1/status" => return Some(Route::Status),
            "/metrics" => return Some(Route::Metrics),
            _ => {}
        }
        let rest = path.strip_prefix("/v1/groups/")?;
        let (group, what) = rest.split_once('/')?;
        if group.is_empty() {
            return None;
        }
        match what {
            "active" => Some(Route::Active(group)),
            "passive" => Some(Route::Passive(group)),
            "state" => Some(Route::State(group)),
            _ => None,
        }
    }
}

/// The answer to `method` on `path` from `snapshot`; `loop_alive`: the event loop stepped
/// recently ([`super::StateReader::loop_alive`]). Unknown paths: 404 (any method); other
/// methods than GET and HEAD on a route: 405 with `Allow`. `/metrics` is 404 here: see
/// [`route_with_metrics`].
pub fn route(snapshot: &Arc<Snapshot>, loop_alive: bool, method: &Method, path: &str) -> Reply {
    route_with_metrics(snapshot, loop_alive, None, method, path)
}

/// How `/metrics` is answered: from these metrics, in OpenMetrics text if `openmetrics`
/// (the request's `Accept` asked for it), else in the Prometheus text format 0.0.4.
#[derive(Debug, Clone, Copy)]
pub struct MetricsRequest<'m> {
    /// The metrics the agent counts.
    pub metrics: &'m Metrics,
    /// Answer in OpenMetrics text.
    pub openmetrics: bool,
}

/// [`route`], and `/metrics` from `metrics` (`None`: 404, as for an unknown path).
pub fn route_with_metrics(
    snapshot: &Arc<Snapshot>,
    loop_alive: bool,
    metrics: Option<MetricsRequest<'_>>,
    method: &Method,
    path: &str,
) -> Reply {
    let head = method == Method::HEAD;
    let route = Route::of_path(path).filter(|r| *r != Route::Metrics || metrics.is_some());
    let Some(route) = route else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}\n"),
            head,
        );
    };
    if method != Method::GET && !head {
        let mut reply = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here: use GET or HEAD\n"),
            false,
        );
        reply.allow = Some(ALLOW);
        return reply;
    }
    let reply = match route {
        Route::Health => health(snapshot, loop_alive),
        Route::Status => Reply {
            status: StatusCode::OK,
            content_type: JSON,
            allow: None,
            length: 0,
            body: snapshot.status_json(),
        },
        Route::Active(group) => in_role(snapshot, group, Role::Active),
        Route::Passive(group) => in_role(snapshot, group, Role::Passive),
        Route::State(group) => match snapshot.group(group) {
            Some(v) => text(StatusCode::OK, format!("{}\n", v.role), false),
            None => unknown_group(group),
        },
        Route::Metrics => match metrics {
            Some(m) => {
                let (body, content_type) =
                    super::metrics::render(m.metrics, snapshot.clone(), m.openmetrics);
                Reply {
                    status: StatusCode::OK,
                    content_type,
                    allow: None,
                    length: 0,
                    body: Bytes::from(body),
                }
            }
            None => text(
                StatusCode::NOT_FOUND,
                format!("no such path: {path}\n"),
                false,
            ),
        },
    };
    finish(reply, head)
}

/// 200 if `group`'s role is `role` — for `active`, also with every steady unit up (one that
/// systemd or promd restarts in place is down meanwhile) — else 503. The body says the role
/// and the term, and which units are down.
fn in_role(snapshot: &Snapshot, group: &str, role: Role) -> Reply {
    match snapshot.group(group) {
        Some(v) => {
            let units_up = role != Role::Active || v.units_down.is_empty();
            let status = if v.role == role.as_str() && units_up {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = format!("{} (term {})", v.role, v.term);
            if v.role == Role::Active.as_str() && !v.units_down.is_empty() {
                body.push_str(&format!("; not up: {}", v.units_down.join(" ")));
            }
            body.push('\n');
            text(status, body, false)
        }
        None => unknown_group(group),
    }
}

/// 200 while the loop runs, promd is not stopping and the store is connected; the body says
/// which of these holds.
fn health(snapshot: &Snapshot, loop_alive: bool) -> Reply {
    let ok = loop_alive && !snapshot.stopping && snapshot.store_connected;
    let body = serde_json::json!({
        "node": snapshot.node,
        "running": loop_alive,
        "stopping": snapshot.stopping,
        "store_connected": snapshot.store_connected,
    });
    Reply {
        status: if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        content_type: JSON,
        allow: None,
        length: 0,
        body: Bytes::from(format!("{body}\n")),
    }
}

fn unknown_group(group: &str) -> Reply {
    text(
        StatusCode::NOT_FOUND,
        format!("no group {group:?} on this host\n"),
        false,
    )
}

fn text(status: StatusCode, body: String, head: bool) -> Reply {
    finish(
        Reply {
            status,
            content_type: TEXT,
            allow: None,
            length: 0,
            body: Bytes::from(body),
        },
        head,
    )
}

/// Fill in `length`; drop the body of a HEAD answer.
fn finish(mut reply: Reply, head: bool) -> Reply {
    reply.length = reply.body.len();
    if head {
        reply.body = Bytes::new();
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::super::tests::view;
    use super::*;
    use crate::metrics::Metrics;

    fn snapshot(store_connected: bool, stopping: bool) -> Arc<Snapshot> {
        let mut retired = view(3, "gone", "active", 9);
        retired.retired = true;
        let groups = vec![
            view(0, "web", "active", 7),
            view(1, "db", "passive", 7),
            view(2, "mail", "demoting", 4),
            retired,
        ];
        Arc::new(Snapshot::new(
            "n1",
            store_connected,
            stopping,
            groups.into_iter().map(Arc::new).collect(),
        ))
    }

    fn get(s: &Arc<Snapshot>, path: &str) -> (u16, String) {
        let r = route(s, true, &Method::GET, path);
        assert_eq!(r.length, r.body.len());
        (
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body).into_owned(),
        )
    }

    #[test]
    fn active_and_passive_answer_by_role() {
        let s = snapshot(true, false);
        assert_eq!(
            get(&s, "/v1/groups/web/active"),
            (200, "active (term 7)\n".into())
        );
        assert_eq!(get(&s, "/v1/groups/web/passive").0, 503);
        assert_eq!(
            get(&s, "/v1/groups/db/active"),
            (503, "passive (term 7)\n".into())
        );
        assert_eq!(get(&s, "/v1/groups/db/passive").0, 200);
        // A demotion drains the balancer before the units stop; it is not passive yet either.
        assert_eq!(get(&s, "/v1/groups/mail/active").0, 503);
        assert_eq!(get(&s, "/v1/groups/mail/passive").0, 503);
        for role in ["starting", "promoting", "failed", "maintenance"] {
            let s = Arc::new(Snapshot::new(
                "n1",
                true,
                false,
                vec![Arc::new(view(0, "web", role, 1))],
            ));
            assert_eq!(get(&s, "/v1/groups/web/active").0, 503, "{role}");
            assert_eq!(get(&s, "/v1/groups/web/passive").0, 503, "{role}");
        }
        // Whatever the store says: the role is what this host does.
        let s = snapshot(false, true);
        assert_eq!(get(&s, "/v1/groups/web/active").0, 200);
    }

    #[test]
    fn active_is_503_while_a_steady_unit_is_down() {
        let mut web = view(0, "web", "active", 7);
        web.units_down = vec!["api.service".into(), "web.service".into()];
        let mut db = view(1, "db", "passive", 3);
        // The passive host's active units are down by design: /passive does not look.
        db.units_down = vec!["db.service".into()];
        let s = Arc::new(Snapshot::new(
            "n1",
            true,
            false,
            vec![web.into(), db.into()],
        ));
        assert_eq!(
            get(&s, "/v1/groups/web/active"),
            (
                503,
                "active (term 7); not up: api.service web.service\n".into()
            )
        );
        assert_eq!(get(&s, "/v1/groups/web/state"), (200, "active\n".into()));
        assert_eq!(
            get(&s, "/v1/groups/db/passive"),
            (200, "passive (term 3)\n".into())
        );
        let head = route(&s, true, &Method::HEAD, "/v1/groups/web/active");
        assert_eq!(head.status.as_u16(), 503);
    }

    #[test]
    fn state_is_the_role_as_text() {
        let s = snapshot(true, false);
        assert_eq!(get(&s, "/v1/groups/web/state"), (200, "active\n".into()));
        assert_eq!(get(&s, "/v1/groups/mail/state"), (200, "demoting\n".into()));
        let r = route(&s, true, &Method::GET, "/v1/groups/web/state");
        assert_eq!(r.content_type, TEXT);
    }

    #[test]
    fn unknown_groups_and_paths_are_404() {
        let s = snapshot(true, false);
        for path in [
            "/v1/groups/nope/active",
            "/v1/groups/nope/passive",
            "/v1/groups/nope/state",
            // Retired by a reload: handing over, no longer served.
            "/v1/groups/gone/active",
        ] {
            let (status, body) = get(&s, path);
            assert_eq!(status, 404, "{path}");
            assert!(body.contains("no group"), "{body}");
        }
        for path in [
            "/",
            "/v1",
            "/v1/groups",
            "/v1/groups/",
            "/v1/groups//active",
            "/v1/groups/web",
            "/v1/groups/web/",
            "/v1/groups/web/leader",
            "/v1/groups/web/active/x",
            "/v1/status/",
            "/metrics",
        ] {
            assert_eq!(get(&s, path).0, 404, "{path}");
            assert_eq!(route(&s, true, &Method::POST, path).status, 404, "{path}");
        }
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        let s = snapshot(true, false);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            for path in ["/v1/health", "/v1/status", "/v1/groups/web/active"] {
                let r = route(&s, true, &method, path);
                assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(r.allow, Some(ALLOW));
            }
        }
    }

    #[test]
    fn head_is_get_without_the_body() {
        let s = snapshot(true, false);
        for path in [
            "/v1/health",
            "/v1/status",
            "/v1/groups/web/active",
            "/v1/groups/db/active",
            "/v1/groups/web/state",
            "/v1/groups/nope/state",
            "/nowhere",
        ] {
            let g = route(&s, true, &Method::GET, path);
            let h = route(&s, true, &Method::HEAD, path);
            assert!(h.body.is_empty(), "{path}");
            assert_eq!(
                (h.status, h.content_type, h.allow, h.length),
                (g.status, g.content_type, g.allow, g.body.len()),
                "{path}"
            );
        }
    }

    #[test]
    fn health_needs_the_loop_and_the_store() {
        let health = |s: &Arc<Snapshot>, alive: bool| {
            let r = route(s, alive, &Method::GET, "/v1/health");
            assert_eq!(r.content_type, JSON);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            (r.status.as_u16(), v)
        };
        let (status, v) = health(&snapshot(true, false), true);
        assert_eq!(status, 200);
        assert_eq!(
            v,
            serde_json::json!({"node": "n1", "running": true, "stopping": false, "store_connected": true})
        );
        let (status, v) = health(&snapshot(false, false), true);
        assert_eq!(
            (status, &v["store_connected"]),
            (503, &serde_json::json!(false))
        );
        let (status, v) = health(&snapshot(true, false), false);
        assert_eq!((status, &v["running"]), (503, &serde_json::json!(false)));
        let (status, v) = health(&snapshot(true, true), true);
        assert_eq!((status, &v["stopping"]), (503, &serde_json::json!(true)));
    }

    #[test]
    fn status_is_the_json_document() {
        let s = snapshot(false, false);
        let r = route(&s, true, &Method::GET, "/v1/status");
        assert_eq!((r.status, r.content_type), (StatusCode::OK, JSON));
        assert_eq!(r.body, s.status_json());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(v["node"], "n1");
        assert_eq!(v["store_connected"], false);
        let names: Vec<&str> = v["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["web", "db", "mail"]);
    }

    #[test]
    fn metrics_is_served_when_there_are_metrics() {
        let s = snapshot(true, false);
        let metrics = Metrics::new(std::time::Instant::now());
        for (openmetrics, content_type) in [
            (false, super::super::metrics::PROMETHEUS_TEXT),
            (true, super::super::metrics::OPENMETRICS),
        ] {
            let m = Some(MetricsRequest {
                metrics: &metrics,
                openmetrics,
            });
            let r = route_with_metrics(&s, true, m, &Method::GET, "/metrics");
            assert_eq!((r.status, r.content_type), (StatusCode::OK, content_type));
            let body = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                body.contains("promd_group_role{group=\"web\",role=\"active\"} 1"),
                "{body}"
            );
            // Retired groups are not listed.
            assert!(!body.contains("group=\"gone\""), "{body}");
            assert_eq!(body.ends_with("# EOF\n"), openmetrics, "{body}");
            let h = route_with_metrics(&s, true, m, &Method::HEAD, "/metrics");
            assert!(h.body.is_empty() && h.length == r.body.len());
            let p = route_with_metrics(&s, true, m, &Method::POST, "/metrics");
            assert_eq!(p.status, StatusCode::METHOD_NOT_ALLOWED);
        }
    }
}
