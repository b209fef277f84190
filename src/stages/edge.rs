//! A channel between two stages (bounded, abortable) and the admission window that bounds
//! the whole pipeline.
//!
//! Ordered consumers restore sequence order with a reorder buffer. A per-edge bound on that
//! buffer can deadlock (workers holding late items wait while the early item sits behind
//! them), so the bound is global instead: the source may only emit item `s` while
//! `s < delivered + window`, where `delivered` counts items the sink has taken and `window`
//! is the sum of all capacities and workers. Items in flight, buffers included, never
//! exceed the window, and the item the sink waits for is always already admitted, so every
//! blocked thread is waiting on something that can move.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, select};

use super::cancel::Abort;

/// An item on its way, or a tombstone (`item: None`) standing for an item that was
/// skipped or filtered, so ordered consumers never wait for a number that will not come.
pub(crate) struct Packet<T> {
    pub seq: u64,
    pub item: Option<T>,
}

/// The source's admission window (see the module doc).
pub(crate) struct Admission {
    delivered: Mutex<u64>,
    moved: Condvar,
    window: AtomicU64,
}

impl Admission {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            delivered: Mutex::new(0),
            moved: Condvar::new(),
            window: AtomicU64::new(u64::MAX / 2),
        })
    }

    /// Sets the window; called once when the run starts.
    pub fn set_window(&self, window: u64) {
        self.window.store(window.max(1), Ordering::Relaxed);
    }

    /// Blocks the source until item `seq` may enter; returns the time spent waiting.
    pub fn admit(&self, seq: u64, abort: &Abort) -> Result<Duration, Closed> {
        let window = self.window.load(Ordering::Relaxed);
        let mut delivered = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        if seq < *delivered + window {
            return Ok(Duration::ZERO);
        }
        let t = Instant::now();
        while seq >= *delivered + window {
            if abort.is_set() {
                return Err(Closed::Aborted);
            }
            delivered = self
                .moved
                .wait_timeout(delivered, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(t.elapsed())
    }

    /// Called by the sink for each item it takes (tombstones included).
    pub fn delivered(&self, next: u64) {
        *self.delivered.lock().unwrap_or_else(|e| e.into_inner()) = next;
        self.moved.notify_one();
    }
}

/// Why a send or receive gave up.
pub(crate) enum Closed {
    /// The other side is gone (end of stream or it exited).
    Disconnected,
    /// The pipeline was aborted.
    Aborted,
}

/// Sends, blocking on backpressure; returns the time spent blocked.
pub(crate) fn send<T>(
    tx: &Sender<Packet<T>>,
    packet: Packet<T>,
    abort: &Abort,
) -> Result<Duration, Closed> {
    let packet = match tx.try_send(packet) {
        Ok(()) => return Ok(Duration::ZERO),
        Err(TrySendError::Disconnected(_)) => return Err(Closed::Disconnected),
        Err(TrySendError::Full(p)) => p,
    };
    let t = Instant::now();
    select! {
        send(tx, packet) -> r => r.map_err(|_| Closed::Disconnected)?,
        recv(abort.rx) -> _ => return Err(Closed::Aborted),
    }
    Ok(t.elapsed())
}

/// Receives the next packet in arrival order; returns it and the time spent blocked.
pub(crate) fn recv<T>(
    rx: &Receiver<Packet<T>>,
    abort: &Abort,
) -> Result<(Packet<T>, Duration), Closed> {
    match rx.try_recv() {
        Ok(p) => return Ok((p, Duration::ZERO)),
        Err(TryRecvError::Disconnected) => return Err(Closed::Disconnected),
        Err(TryRecvError::Empty) => {}
    }
    let t = Instant::now();
    select! {
        recv(rx) -> r => match r {
            Ok(p) => Ok((p, t.elapsed())),
            Err(_) => Err(Closed::Disconnected),
        },
        recv(abort.rx) -> _ => Err(Closed::Aborted),
    }
}

/// The receiving end a worker reads from: shared arrival order, or strict sequence order.
pub(crate) enum Input<T> {
    /// Any worker takes the next packet that arrives.
    Arrival(Receiver<Packet<T>>),
    /// One worker sees packets strictly by sequence number.
    Ordered(OrderedReceiver<T>),
}

impl<T> Input<T> {
    pub fn recv(&mut self, abort: &Abort) -> Result<(Packet<T>, Duration), Closed> {
        match self {
            Input::Arrival(rx) => recv(rx, abort),
            Input::Ordered(o) => o.recv(abort),
        }
    }
}

/// The consuming end of an ordered link: hands out packets strictly by sequence number.
pub(crate) struct OrderedReceiver<T> {
    admission: Option<Arc<Admission>>,
    rx: Receiver<Packet<T>>,
    next: u64,
    buffer: BTreeMap<u64, Packet<T>>,
}

impl<T> OrderedReceiver<T> {
    /// `admission` is given for the sink only: it is what the source's window follows.
    pub fn new(rx: Receiver<Packet<T>>, admission: Option<Arc<Admission>>) -> Self {
        Self {
            admission,
            rx,
            next: 0,
            buffer: BTreeMap::new(),
        }
    }

    fn advance(&mut self) {
        self.next += 1;
        if let Some(a) = &self.admission {
            a.delivered(self.next);
        }
    }

    /// The packet numbered `next`, waiting for it if needed.
    pub fn recv(&mut self, abort: &Abort) -> Result<(Packet<T>, Duration), Closed> {
        let mut blocked = Duration::ZERO;
        loop {
            if let Some(p) = self.buffer.remove(&self.next) {
                self.advance();
                return Ok((p, blocked));
            }
            let (p, b) = recv(&self.rx, abort)?;
            blocked += b;
            if p.seq == self.next {
                self.advance();
                return Ok((p, blocked));
            }
            self.buffer.insert(p.seq, p);
        }
    }
}
