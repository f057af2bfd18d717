//! Change notification: inotify on the group's directories (polling covers the rest).

use std::io::{self};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use rustix::fs::inotify;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::files::Paths;

/// inotify on the group directory and `members/`: prompt notice of local changes.
pub(super) struct Watcher {
    pub(super) fd: AsyncFd<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    /// Only our own temporary files and the lock moved.
    Quiet,
    Changed,
    /// A watched directory went away (or the queue broke): read, and watch again later.
    Broken,
}

impl Watcher {
    pub(super) fn new(paths: &Paths) -> io::Result<Watcher> {
        use inotify::{CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // Files are replaced by rename (MOVED_TO) or deleted; CLOSE_WRITE catches a file
        // written in place (by hand).
        let mask = WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        inotify::add_watch(&fd, &paths.dir, mask)?;
        inotify::add_watch(&fd, &paths.members, mask)?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it alone, so the
        // descriptor stays open, and `as_raw_fd` returns the same number, until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Watcher { fd })
    }

    pub(super) async fn next(&self) -> Notice {
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                Err(_) => return Notice::Broken,
            };
            let notice = drain(self.fd.get_ref());
            // `drain` read until EAGAIN (or gave up on the descriptor).
            guard.clear_ready();
            if notice != Notice::Quiet {
                return notice;
            }
        }
    }
}

/// Read every pending inotify event.
pub(super) fn drain(fd: &OwnedFd) -> Notice {
    use inotify::ReadFlags;
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut notice = Notice::Quiet;
    loop {
        match reader.next() {
            Ok(event) => {
                let flags = event.events();
                if flags.intersects(
                    ReadFlags::IGNORED
                        | ReadFlags::DELETE_SELF
                        | ReadFlags::MOVE_SELF
                        | ReadFlags::UNMOUNT,
                ) {
                    notice = Notice::Broken;
                } else if notice == Notice::Quiet
                    && (flags.contains(ReadFlags::QUEUE_OVERFLOW) || relevant(event.file_name()))
                {
                    notice = Notice::Changed;
                }
            }
            Err(rustix::io::Errno::AGAIN) => return notice,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Notice::Broken,
        }
    }
}

/// Our temporary files and the lock file change on every write: not news in themselves
/// (the rename that follows is).
pub(super) fn relevant(name: Option<&std::ffi::CStr>) -> bool {
    name.is_none_or(|n| {
        let n = n.to_bytes();
        !n.is_empty() && !n.starts_with(b".") && n != b"lock"
    })
}

pub(super) async fn notice(watcher: &Option<Watcher>) -> Notice {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_and_the_lock_are_not_news() {
        assert!(!relevant(Some(c".leader.tmp")));
        assert!(!relevant(Some(c"lock")));
        assert!(relevant(Some(c"leader")));
        assert!(relevant(None));
    }
}
