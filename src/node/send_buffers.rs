//! A seeder shard's send buffers: one pool per shard with a byte budget
//! (`config::SEND_BUFFER_BUDGET_PER_SHARD_BYTES`).
//!
//! A chunk that cannot leave by `sendfile(2)` (encrypted, or paced in pieces) is pread whole
//! into a buffer first, and sealed there. Each connection used to keep a buffer the size of
//! the largest chunk it sent for as long as it lived: 1,000 downloaders of 64 KiB chunks
//! held ~64 MiB that way, most of it idle between chunks. Now a connection takes a buffer
//! from its shard's pool right before it reads a chunk and gives it back once the chunk is
//! written to the socket; buffers are reused, not allocated per chunk. When the budget is
//! lent out, a connection waits (no timer, no polling: the buffer given back wakes the first
//! in line) in arrival order, so no connection is starved by others asking again and again.
//!
//! A chunk for a data channel is the exception: it is pread into memory of its own, which
//! becomes its messages without a copy and stays with `rtc` until acknowledged, so it cannot
//! come back to the pool. It takes a [`Lease`] of the same budget instead, in the same line,
//! for as long as the seeder holds it.
//!
//! Everything here lives on the shard's thread: `Rc`, `Cell`, `RefCell` and wakers, no
//! locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::future;

/// A shard's pool of send buffers. Cloning gives another handle to the same pool.
#[derive(Clone)]
pub(super) struct SendBuffers {
    pool: Rc<Pool>,
}

struct Pool {
    /// Bytes of buffers (lent and idle) the pool keeps at most; one buffer alone may exceed
    /// it (a chunk larger than the budget is still served, alone).
    budget: usize,
    /// Capacity of the buffers lent out now.
    lent: Cell<usize>,
    /// Buffers given back, kept for the next chunks.
    idle: RefCell<Vec<Vec<u8>>>,
    /// Capacity of `idle`.
    idle_bytes: Cell<usize>,
    /// Connections waiting for a buffer, first come first served.
    queue: RefCell<VecDeque<Rc<Waiter>>>,
}

/// One connection in line for a buffer.
#[derive(Default)]
struct Waiter {
    waker: RefCell<Option<Waker>>,
}

/// The pool's figures now (for tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PoolFigures {
    /// Bytes of the buffers lent out now.
    lent_bytes: usize,
    /// Bytes of the buffers kept idle for reuse.
    idle_bytes: usize,
    /// Connections waiting now.
    waiting: usize,
}

/// A buffer lent by [`SendBuffers::take`]: at least the length asked for; it goes back to
/// its pool when dropped (whatever ended the chunk: sent, refused or a socket error).
pub(super) struct SendBuffer {
    buf: Vec<u8>,
    pool: Rc<Pool>,
}

impl SendBuffers {
    /// A pool that keeps at most `budget` bytes of buffers.
    pub(super) fn new(budget: usize) -> Self {
        Self {
            pool: Rc::new(Pool {
                budget,
                lent: Cell::new(0),
                idle: RefCell::new(Vec::new()),
                idle_bytes: Cell::new(0),
                queue: RefCell::new(VecDeque::new()),
            }),
        }
    }

    /// A buffer of at least `len` bytes (its contents are whatever the last user left).
    /// Waits, behind the connections that asked earlier, while the budget is lent out;
    /// with nothing lent a buffer is always given, even one larger than the budget.
    /// Dropping the future gives up its place in line.
    pub(super) async fn take(&self, len: usize) -> SendBuffer {
        let buf = self.in_turn(|pool| pool.try_lend(len)).await;
        SendBuffer { buf, pool: self.pool.clone() }
    }

    /// A share of `len` bytes of the budget without a buffer, waiting in the same line as
    /// [`SendBuffers::take`]: for a chunk read into memory of its own that leaves the
    /// shard's hands (a data channel's messages, which `rtc` keeps until acknowledged). While
    /// held it counts as lent, so the chunks a shard holds in memory stay within the budget
    /// either way; dropping it gives the share back and wakes the first in line.
    pub(super) async fn lease(&self, len: usize) -> Lease {
        self.in_turn(|pool| pool.try_reserve(len).then_some(())).await;
        Lease { len, pool: self.pool.clone() }
    }

    /// What `attempt` gives, once it gives something with this caller first in line (at
    /// once if nobody waits). Dropping the future gives up the place in line.
    async fn in_turn<T>(&self, attempt: impl Fn(&Pool) -> Option<T>) -> T {
        let pool = &self.pool;
        if pool.queue.borrow().is_empty() {
            if let Some(got) = attempt(pool) {
                return got;
            }
        }
        let me = Rc::new(Waiter::default());
        pool.queue.borrow_mut().push_back(me.clone());
        let place = Place { pool, me: &me, served: Cell::new(false) };
        future::poll_fn(|cx| {
            let first = pool.queue.borrow().front().is_some_and(|w| Rc::ptr_eq(w, &me));
            if first {
                if let Some(got) = attempt(pool) {
                    pool.queue.borrow_mut().pop_front();
                    place.served.set(true);
                    // The next in line may fit in what is left.
                    pool.wake_first();
                    return Poll::Ready(got);
                }
            }
            *me.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Frees the idle buffers (the shard has no connection left to use them soon).
    pub(super) fn trim(&self) {
        self.pool.idle.borrow_mut().clear();
        self.pool.idle_bytes.set(0);
    }

    /// The pool's figures now.
    #[cfg(test)]
    fn figures(&self) -> PoolFigures {
        let p = &self.pool;
        PoolFigures {
            lent_bytes: p.lent.get(),
            idle_bytes: p.idle_bytes.get(),
            waiting: p.queue.borrow().len(),
        }
    }
}

impl Pool {
    /// Lends a buffer of at least `len` bytes if the budget allows: an idle one that is big
    /// enough, else a new one (idle ones too small are freed to make room).
    fn try_lend(&self, len: usize) -> Option<Vec<u8>> {
        let mut idle = self.idle.borrow_mut();
        // The smallest idle buffer that fits.
        let fit = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        if let Some(i) = fit {
            let buf = idle.swap_remove(i);
            self.idle_bytes.set(self.idle_bytes.get() - buf.len());
            self.lent.set(self.lent.get() + buf.len());
            return Some(buf);
        }
        drop(idle);
        // A new one (idle ones all too small).
        self.try_reserve(len).then(|| vec![0; len])
    }

    /// Counts `len` more bytes as lent if the budget allows (or nothing is lent: one share
    /// may exceed the budget alone), freeing idle buffers until it fits beside them.
    fn try_reserve(&self, len: usize) -> bool {
        let lent = self.lent.get();
        if lent != 0 && lent + len > self.budget {
            return false;
        }
        let mut idle = self.idle.borrow_mut();
        while lent + self.idle_bytes.get() + len > self.budget {
            let Some(b) = idle.pop() else { break };
            self.idle_bytes.set(self.idle_bytes.get() - b.len());
        }
        self.lent.set(lent + len);
        true
    }

    /// Takes back a buffer and wakes the first in line.
    fn give_back(&self, buf: Vec<u8>) {
        self.lent.set(self.lent.get() - buf.len());
        if self.lent.get() + self.idle_bytes.get() + buf.len() <= self.budget {
            self.idle_bytes.set(self.idle_bytes.get() + buf.len());
            self.idle.borrow_mut().push(buf);
        }
        self.wake_first();
    }

    /// Wakes the connection first in line (it looks whether its buffer fits now).
    fn wake_first(&self) {
        let first = self.queue.borrow().front().cloned();
        if let Some(w) = first {
            let waker = w.waker.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A place in line; leaving it unserved (the waiting future dropped) passes the turn on.
struct Place<'a> {
    pool: &'a Pool,
    me: &'a Rc<Waiter>,
    served: Cell<bool>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.served.get() {
            return;
        }
        let was_first = {
            let mut queue = self.pool.queue.borrow_mut();
            let at = queue.iter().position(|w| Rc::ptr_eq(w, self.me));
            if let Some(i) = at {
                queue.remove(i);
            }
            at == Some(0)
        };
        if was_first {
            self.pool.wake_first();
        }
    }
}

impl Deref for SendBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl DerefMut for SendBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for SendBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// A share of the budget taken by [`SendBuffers::lease`]; given back when dropped.
pub(super) struct Lease {
    len: usize,
    pool: Rc<Pool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.lent.set(self.pool.lent.get() - self.len);
        self.pool.wake_first();
    }
}

#[cfg(test)]
mod tests {
    use super::{PoolFigures, SendBuffers};
    use futures_lite::future;
    use std::pin::pin;

    #[test]
    fn buffers_are_reused_not_allocated_per_chunk() {
        let pool = SendBuffers::new(1000);
        let first = future::block_on(pool.take(100));
        let ptr = first.as_ptr();
        drop(first);
        for _ in 0..10 {
            let b = future::block_on(pool.take(100));
            assert_eq!(b.as_ptr(), ptr);
            assert!(b.len() >= 100);
        }
        assert_eq!(pool.figures(), PoolFigures { lent_bytes: 0, idle_bytes: 100, waiting: 0 });
    }

    #[test]
    fn takes_beyond_the_budget_wait_in_line_until_a_buffer_comes_back() {
        let pool = SendBuffers::new(300);
        let a = future::block_on(pool.take(100));
        let b = future::block_on(pool.take(100));
        let c = future::block_on(pool.take(100));
        // Full: the next two wait, in the order they came.
        let mut d = pin!(pool.take(100));
        let mut e = pin!(pool.take(100));
        assert!(future::block_on(future::poll_once(&mut d)).is_none());
        assert!(future::block_on(future::poll_once(&mut e)).is_none());
        assert_eq!(pool.figures(), PoolFigures { lent_bytes: 300, idle_bytes: 0, waiting: 2 });
        // A new take does not jump the line even once a buffer is back.
        drop(a);
        let mut late = pin!(pool.take(100));
        assert!(future::block_on(future::poll_once(&mut late)).is_none());
        assert!(future::block_on(future::poll_once(&mut e)).is_none(), "e is behind d");
        let d = future::block_on(future::poll_once(&mut d)).expect("d is first");
        assert!(future::block_on(future::poll_once(&mut late)).is_none(), "late is behind e");
        drop(b);
        let e = future::block_on(future::poll_once(&mut e)).expect("e is first now");
        drop((c, d, e));
        assert!(future::block_on(future::poll_once(&mut late)).is_some());
        assert_eq!(pool.figures(), PoolFigures { lent_bytes: 0, idle_bytes: 300, waiting: 0 });
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_turn_on() {
        let pool = SendBuffers::new(100);
        let a = future::block_on(pool.take(100));
        let mut b = Box::pin(pool.take(100));
        let mut c = pin!(pool.take(100));
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        assert!(future::block_on(future::poll_once(&mut c)).is_none());
        drop(a);
        // b, first in line, is gone before it took its buffer: c is next.
        drop(b);
        assert!(future::block_on(future::poll_once(&mut c)).is_some());
        assert_eq!(pool.figures().waiting, 0);
    }

    #[test]
    fn a_buffer_larger_than_the_budget_is_lent_alone() {
        let pool = SendBuffers::new(100);
        let small = future::block_on(pool.take(50));
        let mut big = pin!(pool.take(500));
        assert!(future::block_on(future::poll_once(&mut big)).is_none());
        drop(small);
        let big = future::block_on(future::poll_once(&mut big)).expect("nothing else is lent");
        assert!(big.len() >= 500);
        drop(big);
        // Given back, it is not kept: it alone exceeds the budget.
        assert_eq!(pool.figures().idle_bytes, 0);
    }

    #[test]
    fn idle_buffers_too_small_are_freed_to_make_room() {
        let pool = SendBuffers::new(200);
        drop((future::block_on(pool.take(100)), future::block_on(pool.take(100))));
        assert_eq!(pool.figures().idle_bytes, 200);
        let big = future::block_on(pool.take(150));
        let f = pool.figures();
        assert!(f.lent_bytes + f.idle_bytes <= 200, "{f:?}");
        drop(big);
        pool.trim();
        assert_eq!(pool.figures(), PoolFigures::default());
    }

    #[test]
    fn a_lease_counts_against_the_budget_and_waits_in_the_same_line() {
        let pool = SendBuffers::new(300);
        drop(future::block_on(pool.take(100)));
        let lease = future::block_on(pool.lease(250));
        // The idle buffer was freed to make room; the lease is counted as lent.
        assert_eq!(pool.figures(), PoolFigures { lent_bytes: 250, idle_bytes: 0, waiting: 0 });
        let mut buf = pin!(pool.take(100));
        let mut second = pin!(pool.lease(100));
        assert!(future::block_on(future::poll_once(&mut buf)).is_none());
        assert!(future::block_on(future::poll_once(&mut second)).is_none());
        drop(lease);
        assert!(future::block_on(future::poll_once(&mut second)).is_none(), "behind the take");
        let buf = future::block_on(future::poll_once(&mut buf)).expect("first in line");
        let second = future::block_on(future::poll_once(&mut second)).expect("fits beside it");
        assert_eq!(pool.figures().lent_bytes, 200);
        drop((buf, second));
        assert_eq!(pool.figures(), PoolFigures { lent_bytes: 0, idle_bytes: 100, waiting: 0 });
    }

    #[test]
    fn a_returned_buffer_wakes_the_first_in_line() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let pool = SendBuffers::new(100);
        let a = future::block_on(pool.take(100));
        let mut b = pin!(pool.take(100));
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        drop(a);
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "woken once, by the buffer given back");
        assert!(b.as_mut().poll(&mut cx).is_ready());
    }
}
