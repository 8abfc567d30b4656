//! The two channel shapes the pipeline uses: a small queue where the newest frame wins, and a
//! pool that hands buffers back upstream so the hot path does not allocate.

use std::ops::Deref;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// Creates a bounded channel of `cap` items where a push into a full channel drops the oldest
/// item instead of blocking. The producer learns which item was dropped, to count it and
/// recycle its buffer.
pub fn latest<T>(cap: usize) -> (LatestSender<T>, LatestReceiver<T>) {
    let (tx, rx) = bounded(cap.max(1));
    let alive = Arc::new(());
    (LatestSender { tx, rx: rx.clone(), alive: Arc::clone(&alive) }, LatestReceiver { rx, _alive: alive })
}

/// The producer side of [`latest`]. Dropping it disconnects the receiver.
pub struct LatestSender<T> {
    tx: Sender<T>,
    /// A second handle on the queue, used only to evict the stale item.
    rx: Receiver<T>,
    alive: Arc<()>,
}

/// What happened to a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued with room to spare.
    Sent,
    /// Queued; this older item was evicted to make room and is handed back.
    Replaced(T),
    /// The consumer is gone; the item is handed back.
    Disconnected(T),
}

impl<T> LatestSender<T> {
    pub fn push(&self, item: T) -> Pushed<T> {
        if Arc::strong_count(&self.alive) == 1 {
            return Pushed::Disconnected(item);
        }
        match self.tx.try_send(item) {
            Ok(()) => Pushed::Sent,
            Err(TrySendError::Disconnected(item)) => Pushed::Disconnected(item),
            Err(TrySendError::Full(item)) => {
                let stale = self.rx.try_recv().ok();
                match self.tx.try_send(item) {
                    Ok(()) => stale.map_or(Pushed::Sent, Pushed::Replaced),
                    // Only this producer fills the queue, so a slot freed above stays free;
                    // should that ever change, the new item is the one dropped.
                    Err(TrySendError::Full(item)) | Err(TrySendError::Disconnected(item)) => Pushed::Replaced(item),
                }
            }
        }
    }

    /// Waits for room instead of evicting (backpressure, for sources that are not live).
    /// Hands the item back if the consumer is gone.
    pub fn send_blocking(&self, mut item: T) -> Result<(), T> {
        loop {
            if self.is_disconnected() {
                return Err(item);
            }
            match self.tx.send_timeout(item, std::time::Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(i)) => item = i,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(i)) => return Err(i),
            }
        }
    }

    /// Hands `item` on: waiting for room when `wait` (a lossless stream), else newest-wins,
    /// passing an evicted item to `on_evict` (to count and recycle it). Returns false once
    /// the consumer is gone.
    pub fn deliver(&self, item: T, wait: bool, on_evict: impl FnOnce(T)) -> bool {
        if wait {
            return self.send_blocking(item).is_ok();
        }
        match self.push(item) {
            Pushed::Sent => true,
            Pushed::Replaced(old) => {
                on_evict(old);
                true
            }
            Pushed::Disconnected(_) => false,
        }
    }

    /// True once the consumer has dropped its receiver.
    pub fn is_disconnected(&self) -> bool {
        Arc::strong_count(&self.alive) == 1
    }
}

/// The consumer side of [`latest`]: a plain crossbeam receiver (usable in `select!`) that
/// tells the producer when it is dropped.
pub struct LatestReceiver<T> {
    rx: Receiver<T>,
    _alive: Arc<()>,
}

impl<T> Deref for LatestReceiver<T> {
    type Target = Receiver<T>;
    fn deref(&self) -> &Receiver<T> {
        &self.rx
    }
}

/// A bounded free list of buffers shared by the stages of one pipeline.
pub struct Pool<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool { tx: self.tx.clone(), rx: self.rx.clone() }
    }
}

impl<T> Pool<T> {
    pub fn new(cap: usize) -> Self {
        let (tx, rx) = bounded(cap);
        Pool { tx, rx }
    }

    /// A recycled buffer, or a new one from `make` when none is free.
    pub fn get(&self, make: impl FnOnce() -> T) -> T {
        self.rx.try_recv().unwrap_or_else(|_| make())
    }

    /// A recycled buffer, waiting up to `timeout` for one to come back; `None` if none did.
    pub fn get_timeout(&self, timeout: std::time::Duration) -> Option<T> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Returns a buffer for reuse; it is freed if the pool is full.
    pub fn put(&self, item: T) {
        let _ = self.tx.try_send(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_and_stale_is_handed_back() {
        let (tx, rx) = latest(1);
        assert_eq!(tx.push(1), Pushed::Sent);
        assert_eq!(tx.push(2), Pushed::Replaced(1));
        assert_eq!(tx.push(3), Pushed::Replaced(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(tx.push(4), Pushed::Sent);
    }

    #[test]
    fn capacity_two_keeps_the_two_newest() {
        let (tx, rx) = latest(2);
        for i in 0..5 {
            tx.push(i);
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn dropping_the_receiver_disconnects_the_producer() {
        let (tx, rx) = latest::<u32>(1);
        assert!(!tx.is_disconnected());
        drop(rx);
        assert!(tx.is_disconnected());
        assert_eq!(tx.push(7), Pushed::Disconnected(7));
    }

    #[test]
    fn dropping_the_producer_ends_the_consumer() {
        let (tx, rx) = latest::<u32>(2);
        tx.push(1);
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn send_blocking_waits_for_room_and_notices_a_gone_consumer() {
        let (tx, rx) = latest(1);
        tx.send_blocking(1).unwrap();
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let first = rx.recv().unwrap();
            let second = rx.recv().unwrap();
            (first, second)
        });
        let start = std::time::Instant::now();
        tx.send_blocking(2).unwrap();
        assert!(start.elapsed() >= std::time::Duration::from_millis(90), "did not wait for room");
        assert_eq!(consumer.join().unwrap(), (1, 2), "nothing was evicted");
        assert_eq!(tx.send_blocking(3), Err(3));
    }

    #[test]
    fn deliver_reports_evictions_and_a_gone_consumer() {
        let (tx, rx) = latest(1);
        let mut evicted = Vec::new();
        assert!(tx.deliver(1, false, |o| evicted.push(o)));
        assert!(tx.deliver(2, false, |o| evicted.push(o)));
        assert_eq!(evicted, vec![1]);
        assert_eq!(rx.try_recv(), Ok(2));
        drop(rx);
        assert!(!tx.deliver(3, false, |_| unreachable!("nothing queued to evict")));
        assert!(!tx.deliver(4, true, |_| unreachable!()));
    }

    #[test]
    fn pool_recycles_and_is_bounded() {
        let pool = Pool::new(1);
        let mut made = 0;
        let a: Vec<u8> = pool.get(|| {
            made += 1;
            Vec::with_capacity(10)
        });
        pool.put(a);
        pool.put(Vec::new()); // over the bound: freed
        let b = pool.get(|| unreachable!("a recycled buffer is available"));
        assert_eq!(b.capacity(), 10);
        assert_eq!(made, 1);
    }
}
