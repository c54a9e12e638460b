//! Wake-ups for tasks that sleep until something happens instead of polling on a timer.
//!
//! [`Notify`] is for one shard (same thread, `Rc`): a WebRTC endpoint's driver, the DHT
//! driver. Cross-thread wake-ups (a shard's inbox, a download's connections spread over
//! shards) go through flume channels, whose `recv_async` wakes a parked glommio executor
//! from any thread (glommio queues the foreign waker and writes the executor's eventfd).

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

use futures_lite::future;

/// A same-thread wake-up that is never lost: a notification given before anyone waits is
/// kept (once) for the next [`Notify::notified`]. One waiter at a time.
#[derive(Default)]
pub(super) struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter, or the next one if nobody waits now.
    pub(super) fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves at the first notification since the last wait ended (at once if one came
    /// meanwhile).
    pub(super) async fn notified(&self) {
        future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::Notify;
    use futures_lite::future;

    #[test]
    fn a_notification_before_the_wait_is_kept_once() {
        let n = Notify::default();
        n.notify();
        n.notify();
        // Kept: resolves at once.
        assert!(future::block_on(future::poll_once(n.notified())).is_some());
        // Only once: the second wait pends until the next notification.
        assert!(future::block_on(future::poll_once(n.notified())).is_none());
        n.notify();
        assert!(future::block_on(future::poll_once(n.notified())).is_some());
    }
}
