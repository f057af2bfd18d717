//! Injecting one fault, waiting for the recovery within its bound, and the figures.

use super::*;

/// How long past a fault's bound the campaign keeps polling for the recovery. The bound itself
/// is asserted on the services' start stamps; this only absorbs slow `systemctl` polls on a
/// loaded machine.
const POLL_SLACK: Duration = Duration::from_secs(15);

impl Engine<'_> {
    pub(super) fn fault(&mut self, index: usize, plan: &Plan) {
        let c = self.c;
        self.current = index;
        let settled = self.settle();
        // Which active host the fault is about (always the one when there is one).
        let hit = settled[(plan.pick / 7 % settled.len() as u64) as usize];
        let (from, from_slot) = (hit.host, hit.slot);
        std::thread::sleep(plan.gap); // a random phase of the renewal cycle, not a synchronisation
        let t_fault = hosts::now_ns();
        let mut result = "done".to_string();
        let target = if plan.at_active {
            from
        } else {
            self.passive_host(&settled, plan.pick)
        };
        let role = if target == from { "active" } else { "passive" };
        let tname = format!("{} ({role})", self.name(target));
        let what = match plan.kind {
            Kind::KillPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGKILL);
                format!("kill -9 promd on {tname}")
            }
            Kind::StopPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                std::thread::sleep(plan.duration); // the fault's duration
                // The watchdog has usually killed it by now; resume it only if it still exists.
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "SIGSTOP promd on {tname} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::KillWeb => {
                let mut kills = 0;
                for k in 0..plan.count {
                    if k > 0 {
                        // The next crash only once it runs again (in place or elsewhere).
                        hosts::wait_until(
                            Duration::from_secs(15),
                            "web.service runs again after a crash",
                            || self.now_active().is_some(),
                        );
                        let still = self
                            .now_active()
                            .is_some_and(|now| now.iter().any(|a| a.host == from));
                        if !still {
                            break; // failed over: the crash loop is over
                        }
                    }
                    let out =
                        c.hosts[from].exec(&["systemctl", "kill", "--signal=KILL", "web.service"]);
                    kills += u32::from(out.status.success());
                }
                format!("kill -9 web.service on {tname} x{kills}")
            }
            Kind::Cut => {
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's duration
                c.hosts[target].heal();
                format!("cut {tname} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdMember => {
                let m = (plan.pick % 3) as usize;
                self.etcd.kill_member(m);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m);
                format!("kill etcd member {m} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdQuorum => {
                let m1 = (plan.pick % 3) as usize;
                let m2 = (m1 + 1 + ((plan.pick / 3) % 2) as usize) % 3;
                self.etcd.kill_member(m1);
                self.etcd.kill_member(m2);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m1);
                format!(
                    "kill etcd members {m1} and {m2} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::Promote => {
                result = self.manager_call(target, "Promote");
                format!("Promote on {tname}")
            }
            Kind::Demote => {
                result = self.manager_call(target, "Demote");
                format!("Demote on {tname}")
            }
            Kind::RestartPromd => {
                c.hosts[target].run_ok(&["systemctl", "restart", "promd.service"]);
                format!("systemctl restart promd on {tname}")
            }
            Kind::Reload | Kind::Reexec => {
                let (method, on) = if target == from {
                    ("Demote", from)
                } else {
                    ("Promote", target)
                };
                let cmd = if plan.kind == Kind::Reload {
                    "daemon-reload"
                } else {
                    "daemon-reexec"
                };
                let (call, (in_flight, failed)) = during_call(&c.hosts[on], method, |in_flight| {
                    std::thread::sleep(plan.delay); // a random moment of the hand-over
                    let was = in_flight();
                    // Every host at once: the one handing over and whichever takes over. A
                    // command that fails is systemd's business, not promd's: counted, not fatal.
                    let failed = std::thread::scope(|s| {
                        let runs: Vec<_> = c
                            .hosts
                            .iter()
                            .map(|h| {
                                s.spawn(move || {
                                    h.exec_timeout(&["systemctl", cmd], Duration::from_secs(60))
                                        .status
                                        .success()
                                })
                            })
                            .collect();
                        runs.into_iter()
                            .map(|r| r.join().unwrap_or(false))
                            .filter(|ok| !ok)
                            .count()
                    });
                    (was, failed)
                });
                let failed = if failed > 0 {
                    format!(" ({cmd} failed on {failed} hosts)")
                } else {
                    String::new()
                };
                result = if in_flight {
                    format!("{call}, {cmd} in flight{failed}")
                } else {
                    format!("{call}, {cmd} after it{failed}")
                };
                format!(
                    "{method} on {tname}, systemctl {cmd} on every host {} ms into it",
                    plan.delay.as_millis()
                )
            }
            Kind::Health => {
                let h = &c.hosts[from];
                let pid = c.promd_pid(from);
                h.write_file(UNHEALTHY, "");
                // The check fails within its interval; promd then restarts the steady units one
                // after the other (web-fork takes 2 s, web-drain drains 3 s): a job in flight.
                let restarting = poll(Duration::from_secs(10), || {
                    !h.run_ok(&["systemctl", "list-jobs", "--no-legend"])
                        .trim()
                        .is_empty()
                });
                std::thread::sleep(plan.delay); // a random moment of the restart
                let still = !h
                    .run_ok(&["systemctl", "list-jobs", "--no-legend"])
                    .trim()
                    .is_empty();
                // An odd count kills promd, an even one cuts the host off.
                let how = if plan.count % 2 == 1 {
                    h.signal(pid, Signal::SIGKILL);
                    "kill -9 promd".to_string()
                } else {
                    h.cut();
                    std::thread::sleep(plan.duration); // the fault's duration
                    h.heal();
                    format!("cut for {} ms", plan.duration.as_millis())
                };
                let _ = std::fs::remove_file(h.path(UNHEALTHY));
                result = match (restarting, still) {
                    (false, _) => "no restart seen".into(),
                    (true, true) => "restart in flight".into(),
                    (true, false) => "restart over".into(),
                };
                format!(
                    "{tname} unhealthy, {how} {} ms into the restart",
                    plan.delay.as_millis()
                )
            }
            Kind::DrainKill | Kind::DrainStop => {
                let h = &c.hosts[from];
                let pid = c.promd_pid(from);
                let (call, (draining, fate)) = during_call(h, "Demote", |_| {
                    let draining = poll(Duration::from_secs(10), || {
                        h.unit_state("web-drain.service") == "deactivating"
                    });
                    std::thread::sleep(plan.delay); // a random moment of the drain
                    let fate = if plan.kind == Kind::DrainKill {
                        h.signal(pid, Signal::SIGKILL);
                        "killed"
                    } else {
                        h.signal(pid, Signal::SIGSTOP);
                        std::thread::sleep(plan.duration); // the fault's duration
                        resume_unless_killed(h, pid)
                    };
                    (draining, fate)
                });
                result = if draining {
                    format!("{fate} in the drain, Demote {call}")
                } else {
                    format!("{fate}, no drain seen, Demote {call}")
                };
                if plan.kind == Kind::DrainKill {
                    format!(
                        "Demote {tname}, kill -9 its promd {} ms into the drain",
                        plan.delay.as_millis()
                    )
                } else {
                    format!(
                        "Demote {tname}, SIGSTOP its promd {} ms into the drain for {} ms",
                        plan.delay.as_millis(),
                        plan.duration.as_millis()
                    )
                }
            }
            Kind::DupNode => {
                let h = &c.hosts[target];
                let before = self.now_active();
                let (own, taken) = (self.name(target).to_string(), self.name(from).to_string());
                let original = h.read_file(CONFIG).expect("promd.toml");
                let renamed =
                    original.replace(&format!("node = \"{own}\""), &format!("node = \"{taken}\""));
                assert_ne!(renamed, original, "the fault renames the node");
                h.write_file(CONFIG, &renamed);
                // Returns once promd is ready; it finds the other host's records right after.
                let _ = h.exec(&["systemctl", "restart", "promd.service"]);
                let failed = poll(Duration::from_secs(20), || {
                    h.unit_state("promd.service") == "failed"
                });
                let status = h
                    .run_ok(&[
                        "systemctl",
                        "show",
                        "-p",
                        "ExecMainStatus",
                        "--value",
                        "promd.service",
                    ])
                    .trim()
                    .to_string();
                h.write_file(CONFIG, &original);
                h.run_ok(&["systemctl", "restart", "promd.service"]);
                assert!(
                    failed && status == "78",
                    "fault #{index}: promd on {tname} as node {taken} was not refused \
                     (failed: {failed}, exit status {status})"
                );
                assert_eq!(
                    self.now_active(),
                    before,
                    "fault #{index}: the active host's run of the zoo was disturbed"
                );
                result = "refused, exit 78".into();
                format!("promd on {tname} restarted as node {taken}, then as {own} again")
            }
            Kind::DelKey => {
                let key = leader_key(from_slot);
                let eps = self.etcd.endpoints().join(",");
                let out = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &eps, "del", &key])
                    .output()
                    .expect("etcdctl");
                assert!(
                    out.status.success(),
                    "etcdctl del {key}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                result = format!("deleted {}", String::from_utf8_lossy(&out.stdout).trim());
                format!("etcdctl del {key} (held by {tname})")
            }
            Kind::CutThenStop => {
                let pid = c.promd_pid(target);
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's timing
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                // Both last until another host took over.
                hosts::wait_until(
                    LEASE * 2 + Duration::from_secs(5),
                    "another host takes over from the cut, hung one",
                    || {
                        self.now_active()
                            .is_some_and(|now| now.iter().all(|a| a.host != target))
                    },
                );
                c.hosts[target].heal();
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "cut {tname}, SIGSTOP its promd {} ms later",
                    plan.duration.as_millis()
                )
            }
        };
        // Quorum is back once the first member serves again; the bound counts from there.
        let healed = Instant::now();
        let t_heal = hosts::now_ns();
        if plan.kind == Kind::EtcdQuorum {
            let m2 = (plan.pick % 3 + 1 + (plan.pick / 3) % 2) % 3;
            self.etcd.restart_member(m2 as usize);
        }
        let (bound, why) = plan.kind.bound();
        let mut found = None;
        // The bound is checked on the services' own start stamps (below), not on when a poll
        // saw them: polling `systemctl` in every host lags under load, so it gets slack.
        let waited = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                (bound + POLL_SLACK).saturating_sub(healed.elapsed()),
                &format!(
                    "exactly {} host(s) active within {} ms of the heal of fault #{index} ({what}); \
                     bound: {why}",
                    self.actives,
                    bound.as_millis()
                ),
                || {
                    // After a deleted key, the holder must first have stopped what ran then
                    // (it may win the key again): until then, its running zoo is no recovery.
                    if plan.kind == Kind::DelKey && !stopped_since(c, from, t_fault) {
                        return false;
                    }
                    found = self.now_active();
                    found.is_some()
                },
            )
        }));
        if let Err(panic) = waited {
            let active = c.active_hosts();
            self.say(format!(
                "#{index} {what}: {result}; NOT recovered within {} ms (+{} ms poll slack; active now: \
                 {active:?})",
                bound.as_millis(),
                POLL_SLACK.as_millis()
            ));
            resume_unwind(panic);
        }
        let t_ok = hosts::now_ns();
        let now = found.unwrap_or_default();
        // The last zoo service to come up on any active host: 0 if every run predates the heal.
        let recovery = now
            .iter()
            .map(|a| Duration::from_nanos(a.latest.saturating_sub(t_heal)))
            .max()
            .unwrap_or_default();
        // Per slot, how long no host ran its web.service; the worst slot.
        let all = c.spans();
        let downtime = now
            .iter()
            .map(|a| {
                let of_slot: Vec<(String, Vec<Span>)> = all
                    .iter()
                    .map(|(h, spans)| {
                        let mine = spans.iter().filter(|s| s.slot == a.slot).copied();
                        (h.clone(), mine.collect())
                    })
                    .collect();
                uncovered(&of_slot, t_fault, t_ok)
            })
            .max()
            .unwrap_or_default();
        let holder_of = |v: &[Active], slot| v.iter().find(|a| a.slot == slot).map(|a| a.host);
        let to = holder_of(&now, from_slot).unwrap_or(from);
        let moved = settled
            .iter()
            .filter(|a| holder_of(&now, a.slot) != Some(a.host))
            .count();
        let outcome = Outcome {
            seed: self.seed,
            index,
            kind: plan.kind,
            what: what.clone(),
            result: result.clone(),
            from: self.name(from).to_string(),
            to: self.name(to).to_string(),
            moved,
            recovery,
            downtime,
        };
        let slot = from_slot.map_or(String::new(), |k| format!(" (slot {k})"));
        self.say(format!(
            "#{index} {what}: {result}; {}{slot} -> {} active, {moved} slot(s) moved, recovery {} ms \
             after the heal (bound {} ms), downtime {} ms",
            outcome.from,
            outcome.to,
            recovery.as_millis(),
            bound.as_millis(),
            downtime.as_millis()
        ));
        assert!(
            recovery <= bound,
            "fault #{index} ({what}): the service started {recovery:?} after the heal, bound {bound:?}"
        );
        self.outcomes.push(outcome);
        // Nothing of the zoo on the other hosts: no process in any zoo unit's cgroup, the tmpfs
        // not mounted.
        for i in (0..c.hosts.len()).filter(|&i| now.iter().all(|a| a.host != i)) {
            let left = zoo_leftovers(&c.hosts[i]);
            assert!(
                left.is_empty(),
                "fault #{index} ({what}): {} is passive, yet it still has: {}",
                self.name(i),
                left.join("; ")
            );
        }
        if plan.kind == Kind::DelKey {
            self.check_holder_killed(from, t_fault);
        }
        check_zoo(c);
    }

    /// After `etcdctl del` of the key at `t_fault`: every zoo service that ran on the holder
    /// then stopped within [`DELKEY_DOWN`].
    pub(super) fn check_holder_killed(&mut self, holder: usize, t_fault: u64) {
        let (all, _) = zoo_view(self.c);
        let mut slowest = Duration::ZERO;
        for (unit, s) in &all[holder].1 {
            if s.start_ns < t_fault && s.end_ns() > t_fault {
                let took = Duration::from_nanos(s.end_ns().saturating_sub(t_fault));
                assert!(
                    took <= DELKEY_DOWN,
                    "{unit} on {} (the key's holder) ran until {} ms after the key was deleted \
                     (bound {} ms): {s:?}",
                    self.name(holder),
                    if s.stop_ns.is_some() {
                        took.as_millis().to_string()
                    } else {
                        "now".into()
                    },
                    DELKEY_DOWN.as_millis()
                );
                slowest = slowest.max(took);
            }
        }
        self.say(format!(
            "   the holder {} had every zoo service down {} ms after the del",
            self.name(holder),
            slowest.as_millis()
        ));
    }

    /// Prints what reproduces the failure and saves the journals, spans and etcd logs.
    pub(super) fn report_failure(&self, faults: usize, so_far: &Report) {
        let failed_at = self.current;
        let dir = PathBuf::from(format!(
            "/tmp/promd-campaign-seed{}-{}",
            self.seed,
            hosts::now_ns() / 1_000_000_000
        ));
        let _ = std::fs::create_dir_all(&dir);
        for h in &self.c.hosts {
            let out = h.exec_timeout(
                &[
                    "journalctl",
                    "--no-pager",
                    "-q",
                    "-o",
                    "short-precise",
                    "-u",
                    "promd.service",
                    "-u",
                    "web*",
                    "-u",
                    MOUNT_UNIT,
                    "-u",
                    "web-active.target",
                    "-u",
                    "web-passive.target",
                ],
                Duration::from_secs(30),
            );
            let _ = std::fs::write(dir.join(format!("{}.journal", h.name())), &out.stdout);
        }
        for m in 0..3 {
            let _ = std::fs::copy(self.etcd.log_path(m), dir.join(format!("etcd-{m}.log")));
        }
        let spans = self.c.spans();
        let _ = std::fs::write(dir.join("timeline.txt"), hosts::timeline(&spans));
        let _ = std::fs::write(
            dir.join("zoo-timeline.txt"),
            zoo_timeline(&read_zoo_spans(self.c)),
        );
        for (i, h) in self.c.hosts.iter().enumerate() {
            let to = dir.join(format!("spans-{}", h.name()));
            let _ = std::fs::create_dir_all(&to);
            if let Ok(rd) = std::fs::read_dir(self.c.span_dir(i)) {
                for e in rd.flatten() {
                    let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                }
            }
        }
        let _ = std::fs::write(dir.join("faults.log"), self.log.join("\n") + "\n");
        let mut partial = Report {
            outcomes: so_far.outcomes.clone(),
            spans: 0,
            outlived: Outlived::default(),
            seeds: so_far.seeds.clone(),
            elapsed: Duration::ZERO,
            actives: so_far.actives,
        };
        partial.outcomes.extend(self.outcomes.iter().cloned());
        eprintln!(
            "\n==== CAMPAIGN FAILED: seed {}, fault #{failed_at} of {faults} ====\n\
             fault log:\n{}\n\
             spans:\n{}\n\
             figures of the faults that passed:{}\n\
             journals (promd, the zoo), spans and timelines (web.service, every zoo unit), etcd \
             logs: {}\n\
             replay: PROMD_CAMPAIGN_SEED={} PROMD_CAMPAIGN_FAULTS={}{} \
             cargo test --release --test {} -- --nocapture\n",
            self.seed,
            self.log.join("\n"),
            hosts::timeline(&spans),
            partial.summary(),
            dir.display(),
            self.seed,
            failed_at + 1,
            kinds_env(&self.kinds),
            if self.actives > 1 {
                "system_campaign_slots"
            } else {
                "system_campaign"
            },
        );
    }
}
