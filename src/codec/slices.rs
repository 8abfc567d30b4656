//! Slices on threads: a pool of persistent workers, each owning its own libjpeg-turbo handle,
//! that encode the horizontal bands of one frame (joined by [`restart::stitch`]) or decode
//! the pieces of one JPEG (cut by [`restart::split`]) straight into the rows of the caller's
//! buffer. The calling thread does one band or piece itself, then any a worker has not
//! started yet, and waits for the others.
//!
//! A job borrows the caller's frame and buffers through raw pointers: [`Pool::run`] returns
//! only once every job it handed out has finished or been taken back from its slot unstarted
//! (also when the caller's own part panics), so the borrowed data outlives every use.

use std::ffi::c_int;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use turbojpeg::raw;

use super::restart::{self, Pieces, Split};
use super::{c_dim, CodecError, JpegBuf, Speed, Tj, NATIVE_0RGB};
use crate::format::Subsampling;

/// CPU time of the calling thread in microseconds (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000)
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A job for one worker: a function of the worker's own state.
type Job<S> = Box<dyn FnOnce(&mut S) -> Result<(), CodecError> + Send>;

/// What a worker sends back for a slot: the job's result, CPU microseconds and wall
/// microseconds (`Ok`, 0 and `None` for a slot found empty).
type Done = (Result<(), CodecError>, u64, Option<u64>);

/// What [`Pool::run`] measured: the workers' CPU microseconds, and the wall microseconds of
/// each job on its worker, the caller's own part last (`None` for a job taken back).
pub(super) struct Ran {
    pub cpu_us: u64,
    pub wall_us: Vec<Option<u64>>,
}

impl Ran {
    /// The workers' CPU time if any worker coded a part of the frame; `None` when the
    /// caller coded it all (every job taken back or kept: the workers got no CPU in time).
    pub fn workers_cpu_us(&self) -> Option<u64> {
        let workers = &self.wall_us[..self.wall_us.len().saturating_sub(1)];
        workers.iter().any(Option::is_some).then_some(self.cpu_us)
    }
}

/// A job handed to a worker, which the caller takes back if the worker has not started it
/// by the time the caller's own part is done.
type Slot<S> = Arc<Mutex<Option<Job<S>>>>;

fn take<S>(slot: &Slot<S>) -> Option<Job<S>> {
    // Nothing panics while the lock is held; a poisoned lock still holds a valid Option.
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Whether no worker has taken the job from `slot` yet.
#[cfg(test)]
fn slot_full<S>(slot: &Slot<S>) -> bool {
    slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

struct Worker<S> {
    jobs: Option<Sender<Slot<S>>>,
    /// Each slot's result and the CPU and wall time its job took.
    done: Receiver<Done>,
    /// Slots taken back whose (empty) result this worker has yet to send.
    owed: usize,
    thread: Option<JoinHandle<()>>,
}

impl<S> Worker<S> {
    /// Collects, without waiting, the results owed for slots taken back: `Some(true)` when
    /// the worker owes none (it may be given a job), `Some(false)` when it has not yet
    /// reported one (it has not even run since: the caller does its part instead), `None`
    /// when it is gone.
    fn settle(&mut self) -> Option<bool> {
        while self.owed > 0 {
            match self.done.try_recv() {
                Ok(_) => self.owed -= 1,
                Err(crossbeam_channel::TryRecvError::Empty) => return Some(false),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            }
        }
        Some(true)
    }
}

/// Persistent worker threads, one per state; they end when the pool is dropped.
///
/// Work-conserving: the caller hands out its jobs, does its own part, then takes back and
/// runs itself every job whose worker has not started it (a worker that the busy machine
/// has not scheduled yet, e.g. with `--fps 0` and both ends on two cores), so a frame never
/// waits for a thread that was given no CPU: at worst it is coded serially, as with one
/// thread.
pub(super) struct Pool<S> {
    workers: Vec<Worker<S>>,
    steer: Steer,
    /// Held by a test to keep the workers from starting a job.
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
    /// Set by a test: the caller waits for every worker to start its job instead of taking
    /// it back, so that a frame is sliced however slowly the workers are scheduled.
    #[cfg(test)]
    patient: bool,
}

impl<S: Send + 'static> Pool<S> {
    /// Starts one thread named `name-N` per state.
    pub(super) fn new(name: &str, states: Vec<S>) -> Result<Self, CodecError> {
        let mut workers = Vec::with_capacity(states.len());
        let mut tids = Vec::with_capacity(states.len());
        #[cfg(test)]
        let gate = Arc::new(Mutex::new(()));
        for (i, mut state) in states.into_iter().enumerate() {
            #[cfg(test)]
            let gate = gate.clone();
            let (job_tx, job_rx) = bounded::<Slot<S>>(1);
            let (done_tx, done_rx) = bounded(1);
            let (tid_tx, tid_rx) = bounded(1);
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{}", i + 1))
                .spawn(move || {
                    let _ = tid_tx.send(Steer::this_thread());
                    for slot in job_rx {
                        #[cfg(test)]
                        drop(gate.lock());
                        let done = match take(&slot) {
                            Some(job) => {
                                let (t0, w0) = (thread_cpu_us(), Instant::now());
                                let res = job(&mut state);
                                (res, thread_cpu_us().saturating_sub(t0), Some(micros(w0)))
                            }
                            None => (Ok(()), 0, None),
                        };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(CodecError::Thread)?;
            tids.push(tid_rx.recv().ok().flatten());
            workers.push(Worker { jobs: Some(job_tx), done: done_rx, owed: 0, thread: Some(thread) });
        }
        Ok(Pool {
            workers,
            steer: Steer::new(tids),
            #[cfg(test)]
            gate,
            #[cfg(test)]
            patient: false,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Hands `jobs[i]` to worker `i`, runs `own` on the calling thread with `state`, then
    /// runs there too (with `state`) every job no worker has started, and returns once every
    /// job has finished or been taken back: `own`'s error or else the first job's, and the
    /// CPU time the workers spent.
    fn run(
        &mut self,
        state: &mut S,
        jobs: Vec<Job<S>>,
        own: impl FnOnce(&mut S) -> Result<(), CodecError>,
    ) -> Result<Ran, CodecError> {
        self.steer.away_from_here();
        #[cfg(test)]
        let patient = self.patient;
        let mut wait =
            Wait { workers: &mut self.workers, slots: Vec::new(), cpu_us: 0, wall_us: Vec::new(), err: None };
        for (i, job) in jobs.into_iter().enumerate() {
            let slot: Slot<S> = Arc::new(Mutex::new(Some(job)));
            let Some(w) = wait.workers.get_mut(i) else {
                // More jobs than workers: not run, and said so rather than left out.
                wait.err.get_or_insert(CodecError::WorkerGone);
                break;
            };
            let sent = match w.settle() {
                Some(true) => w.jobs.as_ref().is_some_and(|tx| tx.send(slot.clone()).is_ok()),
                Some(false) => {
                    wait.slots.push((slot, Handed::Kept));
                    continue;
                }
                None => false,
            };
            if !sent {
                wait.err.get_or_insert(CodecError::WorkerGone);
                break;
            }
            wait.slots.push((slot, Handed::Sent));
        }
        let w0 = Instant::now();
        let own_res = own(state);
        let own_wall = micros(w0);
        #[cfg(test)]
        while patient && wait.slots.iter().any(|(slot, handed)| *handed == Handed::Sent && slot_full(slot)) {
            std::thread::yield_now();
        }
        if own_res.is_ok() {
            for i in 0..wait.slots.len() {
                let (slot, handed) = &mut wait.slots[i];
                if let Some(job) = take(slot) {
                    if *handed == Handed::Sent {
                        *handed = Handed::TakenBack;
                        wait.workers[i].owed += 1;
                    }
                    if let Err(e) = job(state) {
                        wait.err.get_or_insert(e);
                    }
                }
            }
        }
        wait.finish();
        let res = match (own_res, wait.err.take()) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => {
                let mut wall_us = std::mem::take(&mut wait.wall_us);
                wall_us.push(Some(own_wall));
                Ok(Ran { cpu_us: wait.cpu_us, wall_us })
            }
        };
        drop(wait);
        if matches!(res, Err(CodecError::WorkerGone)) {
            // A dead worker's thread id could be reused by another thread: steer no more.
            self.steer = Steer::off();
        }
        res
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None;
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Keeps the workers off the CPU the calling thread runs on.
///
/// A worker woken from its sleep between two live frames is put by Linux's scheduler on the
/// waker's CPU when it was last there (wake-affine), where it waits behind the caller's own
/// slice until the next load balance moves it: measured on this project's 2-core VM, paced at
/// 30 fps, the worker started ~1.7 ms late on about half the frames, so a 2-thread 1080p
/// encode took as long as a 1-thread one. Before handing out jobs, the pool therefore limits
/// its workers to the CPUs it may use other than the caller's (one `sched_setaffinity` per
/// worker when the caller's CPU changes, none otherwise). It does so only while the workers
/// fit on those CPUs (fewer workers than usable CPUs); else, or if the calls fail (a
/// seccomp filter, another OS), it leaves the scheduler alone.
struct Steer {
    #[cfg(target_os = "linux")]
    linux: Option<linux_steer::State>,
}

impl Steer {
    /// The calling thread's id for [`Steer::new`]; `None` where there is none to steer.
    fn this_thread() -> Option<i32> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            Some(unsafe { libc::gettid() })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Steers the threads `tids` (every worker's, or none is steered).
    fn new(tids: Vec<Option<i32>>) -> Steer {
        #[cfg(target_os = "linux")]
        {
            let tids: Option<Vec<i32>> = tids.into_iter().collect();
            Steer { linux: tids.and_then(linux_steer::State::new) }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tids;
            Steer {}
        }
    }

    /// Steers nothing.
    fn off() -> Steer {
        Steer {
            #[cfg(target_os = "linux")]
            linux: None,
        }
    }

    fn away_from_here(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(state) = &mut self.linux {
            if !state.away_from_here() {
                self.linux = None;
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod linux_steer {
    use std::mem::{size_of, zeroed};

    pub(super) struct State {
        pub(super) tids: Vec<i32>,
        /// The CPUs the caller could run on when it last moved (read again each time, so that
        /// a later `taskset` or cpuset change is kept).
        usable: libc::cpu_set_t,
        /// The caller's CPU the workers were last kept off.
        pub(super) away_from: Option<usize>,
    }

    fn count(set: &libc::cpu_set_t) -> usize {
        // SAFETY: `set` is a valid cpu_set_t.
        unsafe { libc::CPU_COUNT(set) as usize }
    }

    impl State {
        /// `None` when the workers would not fit beside the caller (or there are none).
        pub(super) fn new(tids: Vec<i32>) -> Option<State> {
            // SAFETY: an all-zero cpu_set_t is an empty set; sched_getaffinity writes at most
            // its size.
            let mut usable: libc::cpu_set_t = unsafe { zeroed() };
            if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut usable) } != 0 {
                return None;
            }
            (!tids.is_empty() && tids.len() < count(&usable)).then_some(State { tids, usable, away_from: None })
        }

        /// Limits the workers to the usable CPUs but the caller's; false if that failed
        /// (the workers are then left free again, as far as that goes).
        pub(super) fn away_from_here(&mut self) -> bool {
            // SAFETY: sched_getcpu has no preconditions.
            let Ok(cpu) = usize::try_from(unsafe { libc::sched_getcpu() }) else { return false };
            if self.away_from == Some(cpu) {
                return true;
            }
            // SAFETY: sched_getaffinity writes at most the set's size into `usable`.
            if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut self.usable) } != 0 {
                return false;
            }
            let mut set = self.usable;
            if cpu < libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` is within the set.
                unsafe { libc::CPU_CLR(cpu, &mut set) };
            }
            // Workers that do not fit beside the caller share its CPUs, as unsteered.
            let set = if count(&set) >= self.tids.len() { set } else { self.usable };
            let size = size_of::<libc::cpu_set_t>();
            // SAFETY: `set` is a valid cpu_set_t of `size` bytes; a tid that no longer exists
            // gives ESRCH, not undefined behaviour.
            let ok = self.tids.iter().all(|&tid| unsafe { libc::sched_setaffinity(tid, size, &set) } == 0);
            if !ok {
                for &tid in &self.tids {
                    // SAFETY: as above.
                    unsafe { libc::sched_setaffinity(tid, size, &self.usable) };
                }
                return false;
            }
            self.away_from = Some(cpu);
            true
        }
    }
}

/// Where a job went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handed {
    /// Sent to its worker, which runs it unless the caller takes it back.
    Sent,
    /// Kept by the caller: its worker still owed a result from an earlier frame.
    Kept,
    /// Sent, then taken back and run by the caller before the worker started it; the
    /// worker's report of the empty slot is collected before its next job.
    TakenBack,
}

/// Waits for the jobs handed out, also when dropped during a panic (a job not started by
/// then is taken back and dropped, never run).
struct Wait<'a, S> {
    workers: &'a mut [Worker<S>],
    /// Each job's slot, and where it went.
    slots: Vec<(Slot<S>, Handed)>,
    cpu_us: u64,
    /// Each slot's wall time on its worker, in order.
    wall_us: Vec<Option<u64>>,
    err: Option<CodecError>,
}

impl<S> Wait<'_, S> {
    fn finish(&mut self) {
        for (w, (slot, handed)) in self.workers.iter_mut().zip(self.slots.drain(..)) {
            if take(&slot).is_some() {
                // Not started by anyone (the caller's part failed or panicked): dropped.
                w.owed += usize::from(handed == Handed::Sent);
                self.wall_us.push(None);
                continue;
            }
            if handed != Handed::Sent {
                // Run by the caller.
                self.wall_us.push(None);
                continue;
            }
            match w.done.recv() {
                Ok((res, cpu, wall)) => {
                    self.cpu_us += cpu;
                    self.wall_us.push(wall);
                    if let Err(e) = res {
                        self.err.get_or_insert(e);
                    }
                }
                // The worker panicked: its job is over.
                Err(_) => {
                    self.wall_us.push(None);
                    self.err.get_or_insert(CodecError::WorkerGone);
                }
            }
        }
    }
}

impl<S> Drop for Wait<'_, S> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A pointer that may cross to a worker; see the module's note on why it stays valid.
struct Shared<T>(*mut T);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: the pointee outlives the job (`Pool::run` waits) and is used by one thread at a time
// or only read.
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    fn ptr(self) -> *mut T {
        self.0
    }
}

/// The encoder settings every band is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Params {
    pub quality: u8,
    pub subsampling: Subsampling,
    pub fast_dct: bool,
    pub restart_rows: u16,
}

/// One band of a planar frame: plane pointers at its first row, their strides, its size.
#[derive(Clone, Copy)]
struct Band {
    planes: [Shared<u8>; 3],
    strides: [c_int; 3],
    width: usize,
    rows: usize,
}

/// A compressor handle and the settings last applied to it.
pub(super) struct EncWorker {
    tj: Tj,
    applied: Option<Params>,
}

impl EncWorker {
    pub(super) fn new() -> Result<Self, CodecError> {
        let mut tj = Tj::new(raw::TJINIT_TJINIT_COMPRESS)?;
        tj.set(raw::TJPARAM_TJPARAM_NOREALLOC, 1)?;
        Ok(EncWorker { tj, applied: None })
    }

    fn apply(&mut self, p: Params) -> Result<(), CodecError> {
        if self.applied != Some(p) {
            self.applied = None;
            self.tj.set(raw::TJPARAM_TJPARAM_QUALITY, c_int::from(p.quality))?;
            self.tj.set(raw::TJPARAM_TJPARAM_SUBSAMP, super::to_subsamp(p.subsampling) as c_int)?;
            self.tj.set(raw::TJPARAM_TJPARAM_FASTDCT, c_int::from(p.fast_dct))?;
            self.tj.set(raw::TJPARAM_TJPARAM_RESTARTROWS, c_int::from(p.restart_rows))?;
            self.applied = Some(p);
        }
        Ok(())
    }

    /// # Safety
    /// `band`'s planes must hold `band.rows` rows (chroma: as many as the subsampling makes)
    /// of their strides, readable for the whole call.
    unsafe fn compress(&mut self, p: Params, band: &Band, out: &mut JpegBuf) -> Result<(), CodecError> {
        self.apply(p)?;
        let subsamp = super::to_subsamp(p.subsampling);
        out.ensure(turbojpeg::compressed_buf_len(band.width, band.rows, subsamp)?);
        let (w, h) = (c_dim(band.width, "width")?, c_dim(band.rows, "height")?);
        let planes = band.planes.map(|s| s.ptr() as *const u8);
        let mut ptr = out.data.as_mut_ptr();
        let mut len = out.data.len() as raw::size_t;
        // SAFETY: the planes are readable (the caller's contract); with NOREALLOC libjpeg-turbo
        // writes at most `len` bytes at `ptr` (sized by tj3JPEGBufSize) and never frees it.
        let res = unsafe {
            raw::tj3CompressFromYUVPlanes8(
                self.tj.ptr,
                planes.as_ptr(),
                w,
                band.strides.as_ptr(),
                h,
                &mut ptr,
                &mut len,
            )
        };
        if res != 0 {
            return Err(self.tj.error());
        }
        out.len = (len as usize).min(out.data.len());
        Ok(())
    }
}

/// The pixel rows of each band: whole restart intervals of `restart_rows` MCU rows, as
/// equal as they come, at most `threads` bands (the last band possibly shorter).
pub fn band_rows(height: usize, sub: Subsampling, restart_rows: u16, threads: usize) -> Vec<usize> {
    band_rows_shared(height, sub, restart_rows, &vec![1.0; threads.max(1)])
}

/// [`band_rows`] with band `i` about `shares[i]` of the intervals ([`restart::apportion`]).
pub fn band_rows_shared(height: usize, sub: Subsampling, restart_rows: u16, shares: &[f32]) -> Vec<usize> {
    let mcu_h = if sub == Subsampling::S420 { 16 } else { 8 };
    let step = mcu_h * usize::from(restart_rows.max(1));
    let intervals = height.div_ceil(step).max(1);
    restart::apportion(intervals, shares)
        .into_iter()
        .map(|r| (r.end * step).min(height) - (r.start * step).min(height))
        .collect()
}

/// Whether coding frames on the pool pays now: the speedup of the last sliced frames (the
/// CPU time every thread spent over the wall time), and a run of frames coded serially after
/// it did not.
///
/// When the cores are busy with other work (`--fps 0` with both ends on one machine fills
/// them), the workers get no core of their own: a sliced frame then takes as long as a
/// serial one and costs more CPU (measured on this project's 2-core VM, `benches/slices.sh`,
/// 1080p at `--fps 0`: speedup 0.96 when encoding, 1.1 when decoding, and 10 % fewer frames
/// a second than one thread; at a live 30 fps it is 1.7 on both sides). So when the median
/// speedup of [`Gain::WINDOW`] sliced frames is below [`Gain::MIN_SPEEDUP`], the next
/// [`Gain::SERIAL_FRAMES`] frames are coded on the calling thread alone (still with the same
/// restart markers), then slices are tried again.
#[derive(Debug, Default)]
pub(super) struct Gain {
    speedups: Vec<f32>,
    serial_left: u32,
}

impl Gain {
    /// Sliced frames the speedup is judged on.
    pub(super) const WINDOW: usize = 8;
    /// The least speedup that keeps frames sliced.
    pub(super) const MIN_SPEEDUP: f32 = 1.25;
    /// Frames coded serially after slices did not pay.
    pub(super) const SERIAL_FRAMES: u32 = 90;

    /// Whether to slice the next frame (counts a serial one off otherwise).
    pub(super) fn slice_next(&mut self) -> bool {
        if self.serial_left == 0 {
            return true;
        }
        self.serial_left -= 1;
        false
    }

    /// A sliced frame took `wall_us`, and `cpu_us` on all its threads.
    pub(super) fn record(&mut self, wall_us: u64, cpu_us: u64, what: &str) {
        self.speedups.push(cpu_us as f32 / wall_us.max(1) as f32);
        if self.speedups.len() < Self::WINDOW {
            return;
        }
        self.speedups.sort_by(f32::total_cmp);
        let median = self.speedups[Self::WINDOW / 2];
        self.speedups.clear();
        if median < Self::MIN_SPEEDUP {
            self.serial_left = Self::SERIAL_FRAMES;
            tracing::debug!(
                speedup = median,
                "slices do not pay now (the cores are busy): {what} the next {} frames on one thread",
                Self::SERIAL_FRAMES
            );
        }
    }
}

/// How to share a frame's rows between the threads: each thread's speed (rows per wall
/// microsecond, moved halfway to each new measurement), the shares in proportion.
///
/// The cores of a machine are not always equally fast for this work: on this project's
/// 2-core VM one core was often 1.5x slower than the other for seconds at a time (another
/// tenant on its host core), and on any machine another process can take part of a core.
/// With equal bands the frame then waits for the slow thread while the fast one idles
/// (measured at 4K, paced at 30 fps: bands of 4.4-5.5 ms beside bands of 6-10 ms). A
/// thread's share never falls below a quarter of an equal one, so that a slow spell is
/// measured again.
#[derive(Debug, Default)]
pub(super) struct Balance {
    speeds: Vec<Option<f32>>,
}

impl Balance {
    /// The shares of `k` threads (workers first, the caller last, as [`Pool::run`] orders
    /// them).
    pub(super) fn shares(&mut self, k: usize) -> Vec<f32> {
        if self.speeds.len() != k {
            self.speeds = vec![None; k];
        }
        if self.speeds.iter().any(Option::is_none) {
            return vec![1.0; k];
        }
        let total: f32 = self.speeds.iter().flatten().sum();
        let floor = 0.25 / k as f32;
        self.speeds.iter().flatten().map(|v| (v / total).max(floor)).collect()
    }

    /// Thread `i` coded `rows[i]` rows in `wall_us[i]` (`None`: not measured).
    /// Nothing is recorded unless there is one of each for every thread.
    pub(super) fn record(&mut self, rows: &[usize], wall_us: &[Option<u64>]) {
        if rows.len() != self.speeds.len() || wall_us.len() != rows.len() {
            return;
        }
        for ((speed, &rows), wall) in self.speeds.iter_mut().zip(rows).zip(wall_us) {
            let Some(us) = wall.filter(|&us| us > 0 && rows > 0) else { continue };
            let v = rows as f32 / us as f32;
            *speed = Some(speed.map_or(v, |old| (old + v) / 2.0));
        }
    }
}

/// A stage's [`Gain`] and [`Balance`], and what both measure after each sliced frame.
#[derive(Debug, Default)]
pub(super) struct Adapt {
    gain: Gain,
    balance: Balance,
}

impl Adapt {
    /// When a sliced frame starts: the wall clock and the calling thread's CPU time.
    fn start() -> (Instant, u64) {
        (Instant::now(), thread_cpu_us())
    }

    /// A sliced frame that began at `start` is done: thread `i` coded `rows[i]` rows, as
    /// `ran` measured; `what` names the stage in the log ("encoding", "decoding").
    fn record(&mut self, start: (Instant, u64), rows: &[usize], ran: &Ran, what: &str) {
        self.balance.record(rows, &ran.wall_us);
        let own_cpu = thread_cpu_us().saturating_sub(start.1);
        self.gain.record(micros(start.0), own_cpu + ran.cpu_us, what);
    }
}

/// Encodes a planar frame as bands on a pool and stitches them.
pub(super) struct SliceEncoder {
    own: EncWorker,
    pool: Pool<EncWorker>,
    bands: Vec<JpegBuf>,
    adapt: Adapt,
}

impl SliceEncoder {
    pub(super) fn new(threads: usize) -> Result<Self, CodecError> {
        let states = (1..threads).map(|_| EncWorker::new()).collect::<Result<Vec<_>, _>>()?;
        Ok(SliceEncoder {
            own: EncWorker::new()?,
            pool: Pool::new("enc-slice", states)?,
            bands: Vec::new(),
            adapt: Adapt::default(),
        })
    }

    pub(super) fn threads(&self) -> usize {
        self.pool.len() + 1
    }

    /// Encodes `data`, the planes of a `width`x`height` frame with row alignment 1 (checked
    /// by the caller against `yuv_len`), into `out`; returns what the pool did, or `None` if
    /// the frame was coded on this thread alone without it (it is one restart interval, or
    /// slices do not pay now: [`Gain`]).
    pub(super) fn compress(
        &mut self,
        data: &[u8],
        (width, height): (usize, usize),
        p: Params,
        out: &mut JpegBuf,
    ) -> Result<Option<Ran>, CodecError> {
        let shares = self.adapt.balance.shares(self.threads());
        let bands = plan_bands(data, width, height, p, &shares)?;
        // A frame of one restart interval is one band, for this thread alone (as a JPEG of
        // one piece decodes serially): not a sliced frame, nor one for `Gain` to judge.
        if bands.len() < 2 || !self.adapt.gain.slice_next() {
            let band = plan_bands(data, width, height, p, &[1.0])?;
            let band = band.first().ok_or(CodecError::WorkerGone)?;
            // SAFETY: `band` points into `data`, borrowed for the call.
            unsafe { self.own.compress(p, band, out) }?;
            return Ok(None);
        }
        let start = Adapt::start();
        self.bands.resize_with(bands.len(), JpegBuf::default);
        let (own_band, rest) = bands.split_last().ok_or(CodecError::WorkerGone)?;
        let (own_out, rest_out) = self.bands.split_last_mut().ok_or(CodecError::WorkerGone)?;
        let jobs = rest
            .iter()
            .zip(rest_out.iter_mut())
            .map(|(band, buf)| {
                let (band, buf) = (*band, Shared(buf as *mut JpegBuf));
                // SAFETY: `band` points into `data` and `buf` into `self.bands`, both borrowed
                // until `run` returns, which waits for this job; no one else touches `buf`.
                Box::new(move |w: &mut EncWorker| unsafe { w.compress(p, &band, &mut *buf.ptr()) }) as Job<EncWorker>
            })
            .collect();
        let own = &mut self.own;
        // SAFETY: as for the jobs, on this thread.
        let ran = self.pool.run(own, jobs, |own| unsafe { own.compress(p, own_band, own_out) })?;
        let slices: Vec<&[u8]> = self.bands.iter().map(JpegBuf::as_slice).collect();
        restart::stitch(&slices, &mut out.data)?;
        out.len = out.data.len();
        let rows: Vec<usize> = bands.iter().map(|b| b.rows).collect();
        self.adapt.record(start, &rows, &ran, "encoding");
        Ok(Some(ran))
    }
}

/// The bands of a planar frame, pointing into `data`.
fn plan_bands(data: &[u8], width: usize, height: usize, p: Params, shares: &[f32]) -> Result<Vec<Band>, CodecError> {
    let sub = p.subsampling;
    let (cw, ch) = crate::capture::chroma_size(width as u32, height as u32, sub);
    let want = width * height + 2 * cw * ch;
    if data.len() != want {
        let (width, height) = (width as u32, height as u32);
        return Err(CodecError::BadRawLength { got: data.len(), want, width, height, sub });
    }
    let vs = if sub == Subsampling::S420 { 2 } else { 1 };
    let base = data.as_ptr() as *mut u8;
    let strides = [c_dim(width, "width")?, c_dim(cw, "width")?, c_dim(cw, "width")?];
    let mut y0 = 0;
    let mut bands = Vec::new();
    for rows in band_rows_shared(height, sub, p.restart_rows, shares) {
        let at = |off: usize| Shared(base.wrapping_add(off));
        let y = at(y0 * width);
        let planes = if sub == Subsampling::Gray {
            [y, y, y]
        } else {
            [y, at(width * height + y0 / vs * cw), at(width * height + cw * ch + y0 / vs * cw)]
        };
        bands.push(Band { planes, strides, width, rows });
        y0 += rows;
    }
    Ok(bands)
}

/// A decompressor handle and the buffer its pieces are written to.
pub(super) struct DecWorker {
    tj: Tj,
    speed: Speed,
    piece: Vec<u8>,
}

impl DecWorker {
    pub(super) fn new(speed: Speed) -> Result<Self, CodecError> {
        Ok(DecWorker { tj: super::decompressor(speed)?, speed, piece: Vec::new() })
    }

    /// Decodes piece `i` of `p` (split from `jpeg`) into `dst`, its rows of 4 * width bytes.
    /// The piece is decoded with an interval of context above and below, cropped away, so
    /// that smooth chroma upsampling sees the same neighbour rows as a serial decode.
    /// After an error the handle is replaced (see `Decoder::decode`).
    fn decode(&mut self, jpeg: &[u8], p: &Pieces, i: usize, dst: &mut [u8]) -> Result<(), CodecError> {
        let res = self.decode_inner(jpeg, p, i, dst);
        if res.is_err() {
            self.tj = super::decompressor(self.speed)?;
        }
        res
    }

    fn decode_inner(&mut self, jpeg: &[u8], p: &Pieces, i: usize, dst: &mut [u8]) -> Result<(), CodecError> {
        let context = p.with_context(i);
        restart::write_intervals(jpeg, p, context.clone(), &mut self.piece);
        let (width, rows) = (usize::from(p.header.width), p.pieces.get(i).map_or(0, |x| x.rows));
        let got = super::read_size(&mut self.tj, &self.piece)?.unwrap_or((0, 0));
        let pitch = width * 4;
        let all = p.rows(&context);
        let skip = p.pieces.get(i).map_or(0, |x| x.first_row).saturating_sub(all.start);
        if got != (width, all.len()) || dst.len() != rows * pitch || skip + rows > all.len() {
            return Err(CodecError::SizeMismatch { got_w: got.0, got_h: got.1, want_w: width, want_h: all.len() });
        }
        let crop = raw::tjregion { x: 0, y: c_dim(skip, "crop")?, w: c_dim(width, "crop")?, h: c_dim(rows, "crop")? };
        // SAFETY: `ptr` is a live handle whose header was just read.
        if unsafe { raw::tj3SetCroppingRegion(self.tj.ptr, crop) } != 0 {
            return Err(self.tj.error());
        }
        // SAFETY: the piece's header says `width`x`all.len()` (checked just above), cropped to
        // `rows` rows from `skip`, and `dst` holds `rows` rows of `pitch` = 4 * `width` bytes;
        // no scaling factor is set.
        let res = unsafe {
            raw::tj3Decompress8(
                self.tj.ptr,
                self.piece.as_ptr(),
                self.piece.len() as raw::size_t,
                dst.as_mut_ptr(),
                c_dim(pitch, "pitch")?,
                NATIVE_0RGB as c_int,
            )
        };
        if res != 0 {
            return Err(self.tj.error());
        }
        Ok(())
    }
}

/// Decodes JPEGs with restart markers as pieces on a pool.
pub(super) struct SliceDecoder {
    own: DecWorker,
    pool: Pool<DecWorker>,
    adapt: Adapt,
}

impl SliceDecoder {
    pub(super) fn new(threads: usize, speed: Speed) -> Result<Self, CodecError> {
        let states = (1..threads).map(|_| DecWorker::new(speed)).collect::<Result<Vec<_>, _>>()?;
        Ok(SliceDecoder { own: DecWorker::new(speed)?, pool: Pool::new("dec-slice", states)?, adapt: Adapt::default() })
    }

    /// Splits `jpeg` and decodes its pieces into `out` (already `width * height` pixels, the
    /// JPEG's size checked by the caller). Returns `None` if the JPEG must be decoded
    /// serially (it cannot be split, or slices do not pay now: [`Gain`]; its restart
    /// markers are checked either way), else what the pool did.
    pub(super) fn decode(&mut self, jpeg: &[u8], width: usize, out: &mut [u32]) -> Result<Option<Ran>, CodecError> {
        let start = Adapt::start();
        let shares = self.adapt.balance.shares(self.pool.len() + 1);
        let split = match restart::split_shared(jpeg, &shares) {
            Err(e) if e.in_header() => return Ok(None),
            r => r?,
        };
        let p = match split {
            Split::Pieces(p) if p.pieces.len() > 1 && usize::from(p.header.width) == width => p,
            _ => return Ok(None),
        };
        if !self.adapt.gain.slice_next() {
            return Ok(None);
        }
        let pitch = width * 4;
        let px: &mut [u8] = bytemuck::cast_slice_mut(out);
        let mut rest = px;
        let mut parts = Vec::with_capacity(p.pieces.len());
        for piece in &p.pieces {
            let n = (piece.rows * pitch).min(rest.len());
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
            parts.push(part);
            rest = tail;
        }
        let own_part = parts.pop().unwrap_or_default();
        let (jp, pp) = (Shared(jpeg.as_ptr() as *mut u8), Shared(&p as *const Pieces as *mut Pieces));
        let len = jpeg.len();
        let jobs = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let dst = Shared(part.as_mut_ptr());
                let dst_len = part.len();
                Box::new(move |w: &mut DecWorker| {
                    // SAFETY: `jpeg`, `p` and the rows at `dst` are borrowed until `run` returns,
                    // which waits for this job; the rows are this job's alone.
                    let (jpeg, p, dst) = unsafe {
                        (
                            std::slice::from_raw_parts(jp.ptr() as *const u8, len),
                            &*pp.ptr(),
                            std::slice::from_raw_parts_mut(dst.ptr(), dst_len),
                        )
                    };
                    w.decode(jpeg, p, i, dst)
                }) as Job<DecWorker>
            })
            .collect();
        let own = &mut self.own;
        let last = p.pieces.len() - 1;
        let ran = self.pool.run(own, jobs, |own| own.decode(jpeg, &p, last, own_part))?;
        let rows: Vec<usize> = p.pieces.iter().map(|x| x.rows).collect();
        self.adapt.record(start, &rows, &ran, "decoding");
        Ok(Some(ran))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, Encoder};
    use crate::testutil::{self, pattern_frame, pattern_jpeg, restart_jpeg};

    pub(super) const SUBS: [Subsampling; 4] =
        [Subsampling::S420, Subsampling::S422, Subsampling::S444, Subsampling::Gray];

    fn decode(jpeg: &[u8], (w, h): (usize, usize), threads: usize) -> (Vec<u32>, u64) {
        let mut dec = Decoder::new().unwrap();
        dec.set_threads(threads).unwrap();
        let mut px = Vec::new();
        dec.decode(jpeg, w, h, &mut px).unwrap();
        (px, dec.last_cpu_us())
    }

    /// The rows where `a` and `b` differ, and the largest difference of a colour channel.
    fn diff_rows(a: &[u32], b: &[u32], w: usize) -> (Vec<usize>, u8) {
        let mut rows = Vec::new();
        let mut max = 0u8;
        for (y, (ra, rb)) in a.chunks(w).zip(b.chunks(w)).enumerate() {
            let d = ra
                .iter()
                .zip(rb)
                .flat_map(|(x, y)| (0..3).map(move |s| ((x >> (8 * s)) as u8).abs_diff((y >> (8 * s)) as u8)))
                .max();
            if d.unwrap_or(0) > 0 {
                rows.push(y);
                max = max.max(d.unwrap_or(0));
            }
        }
        (rows, max)
    }

    /// A `w`x`h` frame of smooth noise (chroma that changes from row to row).
    pub(super) fn noisy(w: u32, h: u32, sub: Subsampling) -> crate::capture::RawFrame {
        let mut f = pattern_frame(w, h, sub, 0);
        let mut x = 0x2545_f491_u32;
        let mut prev = 128u8;
        for b in &mut f.data {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            prev = prev.wrapping_add((x % 9) as u8).wrapping_sub(4);
            *b = prev;
        }
        f
    }

    /// A frame of smooth noise (chroma that changes from row to row) encoded as `threads`
    /// slices with a restart marker every MCU row.
    fn noise_jpeg(size: (u32, u32), sub: Subsampling, threads: usize) -> Vec<u8> {
        let f = noisy(size.0, size.1, sub);
        let mut enc = Encoder::new(75, sub, false).unwrap();
        enc.set_restart_rows(1).unwrap();
        enc.set_threads(threads).unwrap();
        let mut out = JpegBuf::default();
        enc.encode(&f, &mut out).unwrap();
        out.as_slice().to_vec()
    }

    #[test]
    fn band_rows_are_whole_intervals_with_a_short_last_band() {
        assert_eq!(band_rows(1080, Subsampling::S420, 1, 2), vec![544, 536]);
        assert_eq!(band_rows(70, Subsampling::S420, 1, 3), vec![16, 32, 22]);
        assert_eq!(band_rows(70, Subsampling::S444, 2, 16), vec![16, 16, 16, 16, 6]);
        assert_eq!(band_rows(5, Subsampling::Gray, 1, 4), vec![5]);
        assert_eq!(band_rows(0, Subsampling::Gray, 1, 4), vec![0]);
    }

    /// Sliced encodes at odd sizes, 1 to 16 slices, every subsampling, decoded serially and
    /// in parallel: the same pixels, also in the rows beside a piece boundary with 4:2:0
    /// (each piece is decoded with an interval of context for smooth chroma upsampling).
    #[test]
    fn parallel_decode_matches_serial_decode() {
        for sub in SUBS {
            let (w, h) = if matches!(sub, Subsampling::S420 | Subsampling::S422) { (166, 230) } else { (165, 229) };
            for threads in [1, 2, 3, 4, 7, 16] {
                let jpeg = noise_jpeg((w, h), sub, threads);
                let (w, h) = (w as usize, h as usize);
                let (serial, _) = decode(&jpeg, (w, h), 1);
                let (par, _) = decode(&jpeg, (w, h), threads);
                let (rows, max) = diff_rows(&serial, &par, w);
                assert!(rows.is_empty(), "{sub} {threads} threads: rows {rows:?} differ by up to {max}");
            }
        }
    }

    /// Without the context intervals, 4:2:0 pieces would differ beside their boundaries: the
    /// test above could fail.
    #[test]
    fn pieces_without_context_differ_at_boundaries() {
        let (w, h) = (166usize, 230usize);
        let jpeg = noise_jpeg((w as u32, h as u32), Subsampling::S420, 2);
        let (serial, _) = decode(&jpeg, (w, h), 1);
        let Ok(Split::Pieces(p)) = restart::split(&jpeg, 2) else { panic!("pieces") };
        let mut bare = Vec::new();
        restart::write_piece(&jpeg, &p, 1, &mut bare);
        let (piece, _) = decode(&bare, (w, p.pieces[1].rows), 1);
        let (rows, _) = diff_rows(&serial[p.pieces[1].first_row * w..], &piece, w);
        assert_eq!(rows.first(), Some(&0), "the first row of a bare piece differs");
    }

    #[test]
    fn sliced_encodes_decode_close_to_the_pattern() {
        let (w, h) = (320u32, 200u32);
        let want = crate::capture::pattern::TestPattern::new(w, h, Subsampling::S420).render_rgb(5);
        for threads in [1, 2, 4] {
            let jpeg = restart_jpeg((w, h), Subsampling::S420, 90, 1, threads).unwrap();
            let (px, cpu) = decode(&jpeg, (w as usize, h as usize), threads);
            let p = testutil::psnr(&testutil::xrgb_to_rgb(&px), &want);
            assert!(p > 30.0, "{threads} threads: {p:.1} dB");
            assert!(cpu > 0, "decode CPU time counted");
        }
    }

    /// A frame of one restart interval (here one MCU row) makes a single band, which the
    /// caller codes alone: not sliced, as the decoder says of a JPEG of one piece.
    #[test]
    fn a_frame_of_one_band_is_not_counted_as_sliced() {
        let (w, h) = (64u32, 16u32);
        let f = pattern_frame(w, h, Subsampling::S420, 1);
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        enc.set_threads(2).unwrap();
        let mut out = JpegBuf::default();
        let info = enc.encode(&f, &mut out).unwrap();
        assert!(!info.sliced, "one band, coded on the calling thread, counted as sliced");
        let mut one = Encoder::new(75, Subsampling::S420, false).unwrap();
        one.set_restart_rows(1).unwrap();
        let mut serial = JpegBuf::default();
        one.encode(&f, &mut serial).unwrap();
        assert!(out.as_slice() == serial.as_slice(), "the serial encode's bytes");
        let mut dec = Decoder::new().unwrap();
        dec.set_threads(2).unwrap();
        let mut px = Vec::new();
        dec.decode(out.as_slice(), w as usize, h as usize, &mut px).unwrap();
        assert!(!dec.last_sliced(), "the decoder does not slice a JPEG of one piece");
    }

    #[test]
    fn one_thread_encodes_as_before_and_threads_count_cpu() {
        let f = pattern_frame(320, 240, Subsampling::S420, 2);
        let mut out = JpegBuf::default();
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        let info = enc.encode(&f, &mut out).unwrap();
        assert_eq!(out.as_slice(), pattern_jpeg(320, 240, Subsampling::S420, 75, 2).unwrap());
        assert!(restart::parse_header(out.as_slice()).unwrap().interval == 0, "no DRI by default");
        assert!(info.cpu_us > 0 && !info.sliced);
        enc.set_threads(3).unwrap();
        // The workers code their bands however late they are scheduled (else the frame can
        // be coded by this thread alone, and rightly not count as sliced).
        enc.slices.as_mut().unwrap().pool.patient = true;
        let info = enc.encode(&f, &mut out).unwrap();
        assert_eq!(restart::parse_header(out.as_slice()).unwrap().interval, 20, "one MCU row");
        assert!(info.cpu_us > 0 && !info.passthrough && info.sliced);
        // While slices do not pay the frame is coded on this thread alone, and says so.
        let sliced = out.as_slice().to_vec();
        enc.slices.as_mut().unwrap().adapt.gain.serial_left = 1;
        let info = enc.encode(&f, &mut out).unwrap();
        assert!(!info.sliced && out.as_slice() == sliced, "a serial frame with the same restart markers");
        assert!(enc.encode(&f, &mut out).unwrap().sliced, "sliced again after the serial frames");
        enc.set_quality(40).unwrap();
        let small = enc.encode(&f, &mut out).unwrap();
        assert_eq!(small.quality, 40);
        let mut serial = JpegBuf::default();
        let mut one = Encoder::new(40, Subsampling::S420, false).unwrap();
        one.set_restart_rows(1).unwrap();
        one.encode(&f, &mut serial).unwrap();
        assert!(out.as_slice() == serial.as_slice(), "quality reaches the workers");
        enc.set_threads(1).unwrap();
        enc.set_restart_rows(0).unwrap();
        enc.encode(&f, &mut out).unwrap();
        assert_eq!(out.as_slice(), pattern_jpeg(320, 240, Subsampling::S420, 40, 2).unwrap());
    }

    #[test]
    fn parallel_decoder_handles_plain_and_corrupt_jpegs() {
        let (w, h) = (128usize, 96usize);
        let plain = pattern_jpeg(w as u32, h as u32, Subsampling::S420, 75, 5).unwrap();
        let (a, _) = decode(&plain, (w, h), 1);
        let (b, _) = decode(&plain, (w, h), 4);
        assert!(a == b, "a JPEG without restart markers decodes as before");
        let good = restart_jpeg((w as u32, h as u32), Subsampling::S420, 75, 1, 2).unwrap();
        let h_ = restart::parse_header(&good).unwrap();
        let ivs = restart::intervals(&good, &h_).unwrap();
        let mut bad = good.clone();
        bad[ivs[2].end + 1] = 0xd0 + 6;
        let mut dec = Decoder::new().unwrap();
        dec.set_threads(2).unwrap();
        dec.slices.as_mut().unwrap().pool.patient = true;
        let mut px = Vec::new();
        dec.decode(&good, w, h, &mut px).unwrap();
        assert!(dec.last_sliced(), "a JPEG with restart markers is decoded in pieces");
        dec.decode(&plain, w, h, &mut px).unwrap();
        assert!(!dec.last_sliced(), "a JPEG without restart markers is decoded on one thread");
        let e = dec.decode(&bad, w, h, &mut px).unwrap_err();
        assert!(e.to_string().contains("restart markers: restart marker out of sequence"), "{e}");
        let e = dec.decode(&good, w, 2 * h, &mut px).unwrap_err();
        assert!(matches!(e, CodecError::SizeMismatch { .. }), "{e}");
        let mut short = good[..ivs[3].end].to_vec();
        short.extend_from_slice(&[0xff, 0xd9]);
        let e = dec.decode(&short, w, h, &mut px).unwrap_err();
        assert!(e.to_string().contains("ended early"), "{e}");
        // Damaged entropy data inside a piece: libjpeg-turbo's error, and the decoder goes on.
        let mut garbled = good.clone();
        for b in &mut garbled[ivs[4].clone()] {
            *b = if *b == 0xff { 0xff } else { 0x5a };
        }
        let _ = dec.decode(&garbled, w, h, &mut px);
        dec.decode(&good, w, h, &mut px).expect("a good frame decodes after bad ones");
        assert!(px == decode(&good, (w, h), 2).0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// A damaged JPEG that both decoders accept decodes to the same pixels.
        #[test]
        fn damaged_jpegs_decode_alike_or_fail(at in proptest::prelude::any::<proptest::sample::Index>(), v in 0u8..=255) {
            let mut jpeg = restart_jpeg((64, 48), Subsampling::S420, 60, 1, 2).unwrap();
            let i = at.index(jpeg.len());
            jpeg[i] = v;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let one = Decoder::new().unwrap().decode(&jpeg, 64, 48, &mut a);
            let mut dec = Decoder::new().unwrap();
            dec.set_threads(3).unwrap();
            if one.is_ok() && dec.decode(&jpeg, 64, 48, &mut b).is_ok() {
                proptest::prop_assert!(a == b, "byte {} set to {:#x}", i, v);
            }
        }
    }

    /// The workers' CPU mask after a run: every usable CPU but the caller's (so that Linux
    /// cannot queue a woken worker behind the caller's own slice), and untouched when the
    /// process may use one CPU only.

    #[test]
    fn pool_waits_for_every_job_and_reports_errors() {
        let states: Vec<u32> = vec![0, 0, 0];
        let mut pool = Pool::new("test", states).unwrap();
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs: Vec<Job<u32>> = (0..3)
            .map(|i| {
                let c = counter.clone();
                Box::new(move |s: &mut u32| {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    *s += 1;
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i == 1 {
                        return Err(CodecError::WorkerGone);
                    }
                    Ok(())
                }) as Job<u32>
            })
            .collect();
        let res = pool.run(&mut 0, jobs, |_| Ok(()));
        assert!(matches!(res, Err(CodecError::WorkerGone)));
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 3, "run returned after every job");
        // A worker that panics (the caller waits until it has started, so as not to take the
        // job back).
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = started.clone();
        let jobs: Vec<Job<u32>> = vec![Box::new(move |_: &mut u32| {
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("a worker panics")
        })];
        let res = pool.run(&mut 0, jobs, |_| {
            while !started.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Ok(())
        });
        assert!(matches!(res, Err(CodecError::WorkerGone)));
        let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Ok(()))];
        assert!(pool.run(&mut 0, jobs, |_| Ok(())).is_err(), "the panicked worker is gone");
    }

    /// Frames are sliced while the median speedup of the last 8 sliced frames is at least
    /// 1.25; below it, 90 frames are coded serially, then slices are tried again. One slow
    /// frame among fast ones changes nothing.
    #[test]
    fn slices_stop_for_a_while_when_they_do_not_pay() {
        let mut g = Gain::default();
        let window = |g: &mut Gain, speedups: &[f32]| {
            for &x in speedups {
                assert!(g.slice_next(), "sliced while judging");
                g.record(1000, (x * 1000.0) as u64, "test");
            }
        };
        window(&mut g, &[1.7, 1.8, 0.5, 1.7, 1.6, 1.9, 1.7, 1.7]);
        window(&mut g, &[1.3; 8]);
        assert_eq!(g.serial_left, 0, "1.3x pays");
        window(&mut g, &[1.0, 0.9, 1.1, 1.0, 1.9, 1.0, 1.2, 1.9]);
        let serial = (0..200).take_while(|_| !g.slice_next()).count();
        assert_eq!(serial, Gain::SERIAL_FRAMES as usize, "serial frames after slices did not pay");
        // Tried again: a window of its own decides.
        window(&mut g, &[1.8; 7]);
        assert!(g.slice_next());
        g.record(1000, 1800, "test");
        assert!(g.slice_next());
        // A wall time of 0 (a clock too coarse) does not divide by zero.
        g.record(0, 0, "test");
    }

    /// Equal shares until every thread was measured; then in proportion to each thread's
    /// rows per microsecond (moved halfway to each measurement), never below a quarter of an
    /// equal share; the bands follow the shares.
    #[test]
    fn a_slow_thread_gets_fewer_rows() {
        let mut b = Balance::default();
        assert_eq!(b.shares(2), vec![1.0, 1.0]);
        b.record(&[544, 536], &[Some(4000), None]);
        assert_eq!(b.shares(2), vec![1.0, 1.0], "the caller not measured yet");
        // The worker took twice as long per row as the caller.
        b.record(&[544, 536], &[Some(4000), Some(2000)]);
        let s = b.shares(2);
        assert!((s[0] - 0.3333).abs() < 0.01 && (s[1] - 0.6667).abs() < 0.01, "{s:?}");
        let rows = band_rows_shared(1080, Subsampling::S420, 1, &s);
        assert_eq!(rows, vec![352, 728]);
        // Equally fast again: halfway there at once.
        b.record(&[352, 728], &[Some(1000), Some(2000)]);
        let s = b.shares(2);
        assert!(s[0] > 0.4 && s[0] < 0.5, "{s:?}");
        // A thread that stalls keeps a quarter of an equal share, so it is measured again.
        for _ in 0..20 {
            b.record(&[100, 980], &[Some(1_000_000), Some(1000)]);
        }
        assert_eq!(b.shares(2)[0], 0.125);
        // Other lengths, or a new thread count, change nothing / start over.
        b.record(&[1], &[Some(1)]);
        assert_eq!(b.shares(2)[0], 0.125);
        assert_eq!(b.shares(3), vec![1.0, 1.0, 1.0]);
    }

    /// A job its worker has not started when the caller's own part is done is run by the
    /// caller (with the caller's state), and the pool goes on with the worker afterwards.
    #[test]
    fn jobs_no_worker_started_are_taken_back() {
        let mut pool = Pool::new("test", vec![0u32, 0]).unwrap();
        let ran_on = |log: &std::sync::Arc<Mutex<Vec<(usize, std::thread::ThreadId)>>>, i: usize| {
            let log = log.clone();
            Box::new(move |s: &mut u32| {
                *s += 1;
                log.lock().unwrap().push((i, std::thread::current().id()));
                Ok(())
            }) as Job<u32>
        };
        let me = std::thread::current().id();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut own = 0u32;
        {
            let gate = pool.gate.clone();
            let _held = gate.lock().unwrap();
            for _ in 0..2 {
                // The second run finds both workers still owing the first run's results (held
                // at the gate): it does not wait for them, the caller runs their jobs.
                let jobs = vec![ran_on(&log, 0), ran_on(&log, 1)];
                pool.run(&mut own, jobs, |s| {
                    *s += 1;
                    Ok(())
                })
                .unwrap();
            }
        }
        assert_eq!(own, 6, "the caller ran its part and both jobs twice, with its own state");
        assert_eq!(*log.lock().unwrap(), vec![(0, me), (1, me), (0, me), (1, me)]);
        // The workers are still there: with the gate open they report the empty slots (a
        // worker that has not is given no job: the caller would do its part), then run the
        // next jobs, the caller waiting for both to start.
        while pool.workers.iter_mut().any(|w| w.settle() != Some(true)) {
            std::thread::yield_now();
        }
        log.lock().unwrap().clear();
        let jobs = vec![ran_on(&log, 0), ran_on(&log, 1)];
        let log2 = log.clone();
        pool.run(&mut own, jobs, |_| {
            while log2.lock().unwrap().len() < 2 {
                std::thread::yield_now();
            }
            Ok(())
        })
        .unwrap();
        assert!(log.lock().unwrap().iter().all(|&(_, t)| t != me), "both ran on workers");
        assert_eq!(own, 6);
    }
}

/// Timings for the README and the issue (release build, run by hand):
/// `cargo test --release --lib codec::slices::measure -- --ignored --nocapture`.
#[cfg(test)]
mod measure {
    use super::*;
    use crate::codec::{Decoder, Encoder};
    use crate::testutil::pattern_frame;
    use std::time::Instant;

    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v[v.len() / 2]
    }

    /// Median wall and CPU microseconds of `f` over `n` runs, and its last output size.
    fn time(n: usize, mut f: impl FnMut() -> (u64, usize)) -> (u64, u64, usize) {
        let (mut wall, mut cpu, mut size) = (Vec::new(), Vec::new(), 0);
        for _ in 0..n {
            let t = Instant::now();
            let (c, s) = f();
            wall.push(t.elapsed().as_micros() as u64);
            cpu.push(c);
            size = s;
        }
        (median(wall), median(cpu), size)
    }

    /// The same frames at a live 30 fps (33 ms idle between frames, as in a stream): the
    /// workers sleep between frames and must be woken on another core (see [`Steer`]), and
    /// the frame is no longer in the caches.
    #[test]
    #[ignore]
    fn paced_encode_and_decode_at_30_fps() {
        for (w, h) in [(1920u32, 1080u32), (3840, 2160)] {
            let f = pattern_frame(w, h, Subsampling::S420, 3);
            let mut out = JpegBuf::default();
            for threads in [1usize, 2] {
                let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
                enc.set_restart_rows(1).unwrap();
                enc.set_threads(threads).unwrap();
                let mut dec = Decoder::new().unwrap();
                dec.set_threads(threads).unwrap();
                let mut px = Vec::new();
                let (mut e, mut d) = (Vec::new(), Vec::new());
                for _ in 0..30 {
                    std::thread::sleep(std::time::Duration::from_millis(33));
                    let t = Instant::now();
                    enc.encode(&f, &mut out).unwrap();
                    e.push(t.elapsed().as_micros() as u64);
                    let t = Instant::now();
                    dec.decode(out.as_slice(), w as usize, h as usize, &mut px).unwrap();
                    d.push(t.elapsed().as_micros() as u64);
                }
                eprintln!(
                    "{w}x{h} paced at 30 fps, {threads} thread(s): encode {} us, decode {} us",
                    median(e),
                    median(d)
                );
            }
        }
    }

    #[test]
    #[ignore]
    fn encode_and_decode_times_and_restart_overhead() {
        for (w, h) in [(1920u32, 1080u32), (3840, 2160)] {
            let f = pattern_frame(w, h, Subsampling::S420, 3);
            let mut out = JpegBuf::default();
            for rows in [0u16, 1, 2, 4] {
                let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
                enc.set_restart_rows(rows).unwrap();
                enc.encode(&f, &mut out).unwrap();
                eprintln!("{w}x{h} q75 4:2:0 restart every {rows} MCU rows: {} bytes", out.as_slice().len());
                if rows == 0 {
                    std::fs::write(std::env::temp_dir().join(format!("framecast-{w}x{h}-plain.jpg")), out.as_slice())
                        .unwrap();
                }
            }
            for threads in [1usize, 2] {
                let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
                enc.set_restart_rows(1).unwrap();
                enc.set_threads(threads).unwrap();
                let (wall, cpu, size) = time(30, || {
                    let info = enc.encode(&f, &mut out).unwrap();
                    (info.cpu_us, out.as_slice().len())
                });
                eprintln!("{w}x{h} encode {threads} thread(s): wall {wall} us, cpu {cpu} us, {size} bytes");
                // For other decoders (ffmpeg, GStreamer): the sliced frame and a plain one.
                let dir = std::env::temp_dir();
                std::fs::write(dir.join(format!("framecast-{w}x{h}-{threads}.jpg")), out.as_slice()).unwrap();
                let mut dec = Decoder::new().unwrap();
                dec.set_threads(threads).unwrap();
                let mut px = Vec::new();
                let (wall, cpu, _) = time(30, || {
                    dec.decode(out.as_slice(), w as usize, h as usize, &mut px).unwrap();
                    (dec.last_cpu_us(), 0)
                });
                eprintln!("{w}x{h} decode {threads} thread(s): wall {wall} us, cpu {cpu} us");
            }
        }
    }
}

/// Unequal shares (encoded bytes, decoded pixels), take-back under panics and errors.
#[cfg(test)]
mod unequal_shares_and_take_back {
    use super::tests::{noisy, SUBS};
    use super::*;
    use crate::codec::{Decoder, Encoder};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SHARES: &[&[f32]] = &[
        &[1000.0, 1.0],
        &[1.0, 1000.0],
        &[1000.0, 1.0, 1.0],
        &[1.0, 1.0, 1000.0],
        &[1.0, 1000.0, 1.0],
        &[0.3, 0.1, 5.0, 1.0],
        &[1.0; 16],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0],
        &[f32::NAN, 1.0],
        &[f32::INFINITY, 1.0, 1.0],
    ];

    /// A sliced encode with any shares is the serial encode with the same restart rows, byte
    /// for byte (so a standard JPEG with RST markers numbered on across bands).
    #[test]
    fn sliced_encode_with_unequal_shares_equals_serial_encode() {
        for sub in SUBS {
            for (w, h) in [(166u32, 230u32), (64, 17), (65, 18), (48, 8), (2, 2), (320, 1), (64, 2000)] {
                if sub != Subsampling::S444 && sub != Subsampling::Gray && (w % 2 == 1 || h % 2 == 1) {
                    continue; // the pattern renders no odd subsampled frame
                }
                let f = noisy(w, h, sub);
                for rr in [1u16, 2, 3] {
                    let mut one = Encoder::new(75, sub, false).unwrap();
                    one.set_restart_rows(rr).unwrap();
                    let mut want = JpegBuf::default();
                    one.encode(&f, &mut want).unwrap();
                    for shares in SHARES {
                        let mut se = SliceEncoder::new(shares.len()).unwrap();
                        se.adapt.balance.speeds = shares.iter().map(|&s| Some(s)).collect();
                        let p = Params { quality: 75, subsampling: sub, fast_dct: false, restart_rows: rr };
                        let mut out = JpegBuf::default();
                        se.compress(&f.data, (w as usize, h as usize), p, &mut out).unwrap();
                        assert!(
                            out.as_slice() == want.as_slice(),
                            "{sub} {w}x{h} restart {rr} shares {shares:?}: sliced encode differs from serial"
                        );
                        let hd = restart::parse_header(out.as_slice()).unwrap();
                        restart::intervals(out.as_slice(), &hd).unwrap();
                    }
                }
            }
        }
    }

    /// A JPEG split with any shares (bypassing Balance's floor) decodes piece by piece to the
    /// serial decode's pixels.
    #[test]
    fn pieces_cut_with_unequal_shares_decode_like_serial() {
        for sub in SUBS {
            for (w, h) in [(166u32, 230u32), (64, 33), (64, 34), (48, 16), (2, 2), (64, 2000)] {
                for rr in [1u16, 2] {
                    if sub != Subsampling::S444 && sub != Subsampling::Gray && (w % 2 == 1 || h % 2 == 1) {
                        continue;
                    }
                    let f = noisy(w, h, sub);
                    let mut one = Encoder::new(75, sub, false).unwrap();
                    one.set_restart_rows(rr).unwrap();
                    let mut jpeg = JpegBuf::default();
                    one.encode(&f, &mut jpeg).unwrap();
                    let jpeg = jpeg.as_slice().to_vec();
                    let (w, h) = (w as usize, h as usize);
                    for speed in [Speed::default(), Speed { fast_dct: false, fast_upsample: true }] {
                        let mut serial = Vec::new();
                        Decoder::with_speed(speed).unwrap().decode(&jpeg, w, h, &mut serial).unwrap();
                        let serial: Vec<u8> = bytemuck::cast_slice(&serial).to_vec();
                        for shares in SHARES {
                            let Split::Pieces(p) = restart::split_shared(&jpeg, shares).unwrap() else {
                                panic!("serial")
                            };
                            let mut px = vec![0u8; w * h * 4];
                            let mut dw = DecWorker::new(speed).unwrap();
                            for (i, piece) in p.pieces.iter().enumerate() {
                                let at = piece.first_row * w * 4;
                                dw.decode(&jpeg, &p, i, &mut px[at..at + piece.rows * w * 4]).unwrap();
                            }
                            assert!(px == serial, "{sub} {w}x{h} rr {rr} {speed:?} shares {shares:?}");
                            // And through SliceDecoder with Balance's shares.
                            let mut sd = SliceDecoder::new(shares.len(), speed).unwrap();
                            sd.adapt.balance.speeds = shares.iter().map(|&s| Some(s)).collect();
                            let mut out = vec![0u32; w * h];
                            let r = sd.decode(&jpeg, w, &mut out).unwrap();
                            if r.is_some() {
                                assert!(
                                    bytemuck::cast_slice::<u32, u8>(&out) == &serial[..],
                                    "{sub} {w}x{h} {shares:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn counting(c: &Arc<AtomicUsize>) -> Job<u32> {
        let c = c.clone();
        Box::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    /// A taken-back job that panics on the caller: run unwinds, the other unstarted jobs are
    /// dropped (never run), and the pool goes on afterwards (no hang on the owed results).
    #[test]
    fn panic_in_a_taken_back_job_leaves_the_pool_usable() {
        let mut pool = Pool::new("t", vec![0u32, 0, 0]).unwrap();
        let c = Arc::new(AtomicUsize::new(0));
        {
            let gate = pool.gate.clone();
            let _held = gate.lock().unwrap();
            let jobs: Vec<Job<u32>> =
                vec![counting(&c), Box::new(|_: &mut u32| panic!("taken-back job panics")), counting(&c)];
            let r = catch_unwind(AssertUnwindSafe(|| pool.run(&mut 0, jobs, |_| Ok(()))));
            assert!(r.is_err());
            assert_eq!(c.load(Ordering::SeqCst), 1, "job 0 ran on the caller, job 2 was dropped");
            assert_eq!(pool.workers.iter().map(|w| w.owed).collect::<Vec<_>>(), vec![1, 1, 1]);
        }
        for _ in 0..3 {
            let jobs: Vec<Job<u32>> = vec![counting(&c), counting(&c), counting(&c)];
            pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
        }
        assert_eq!(c.load(Ordering::SeqCst), 10);
    }

    /// An error from a taken-back job is reported; the caller's own error wins; the jobs of a
    /// failed own part are dropped unrun.
    #[test]
    fn errors_of_taken_back_jobs_and_own_errors() {
        let mut pool = Pool::new("t", vec![0u32, 0]).unwrap();
        let c = Arc::new(AtomicUsize::new(0));
        let gate = pool.gate.clone();
        {
            let _held = gate.lock().unwrap();
            let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Err(CodecError::WorkerGone)), counting(&c)];
            let r = pool.run(&mut 0, jobs, |_| Ok(()));
            assert!(matches!(r, Err(CodecError::WorkerGone)));
            assert_eq!(c.load(Ordering::SeqCst), 1, "the second taken-back job ran after the first failed");
        }
        {
            // (a fresh pool: with the gate held, settling the owed results above would wait
            // for the gated workers)
            let mut pool = Pool::new("t", vec![0u32, 0]).unwrap();
            let gate = pool.gate.clone();
            let _held = gate.lock().unwrap();
            let jobs: Vec<Job<u32>> = vec![counting(&c), counting(&c)];
            let r = pool.run(&mut 0, jobs, |_| Err(CodecError::Restart(restart::RestartError::NoBands)));
            assert!(matches!(r, Err(CodecError::Restart(_))));
            assert_eq!(c.load(Ordering::SeqCst), 1, "jobs of a failed own part never run");
        }
        let jobs: Vec<Job<u32>> = vec![counting(&c), counting(&c)];
        pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
        assert_eq!(c.load(Ordering::SeqCst), 3);
    }

    /// Dropping a pool whose workers owe results does not hang.
    #[test]
    fn drop_with_owed_results_does_not_hang() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pool = Pool::new("t", vec![0u32, 0]).unwrap();
            let gate = pool.gate.clone();
            {
                let _held = gate.lock().unwrap();
                let c = Arc::new(AtomicUsize::new(0));
                let jobs: Vec<Job<u32>> = vec![counting(&c), counting(&c)];
                pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
                let jobs: Vec<Job<u32>> = vec![counting(&c)];
                // Only worker 0 gets one: worker 1 still owes.
                drop(_held);
                pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
            }
            drop(pool);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("pool drop hung");
    }

    /// A worker that panics: its job's borrowed data is not used after run returns, and every
    /// later run reports the worker gone (does not hang), also for jobs it never gets.
    #[test]
    fn a_dead_worker_never_hangs_later_runs() {
        let mut pool = Pool::new("t", vec![0u32, 0]).unwrap();
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = started.clone();
        let jobs: Vec<Job<u32>> = vec![
            Box::new(move |_: &mut u32| {
                s2.store(true, Ordering::SeqCst);
                panic!("worker panics")
            }),
            Box::new(|_: &mut u32| Ok(())),
        ];
        let r = pool.run(&mut 0, jobs, |_| {
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Ok(())
        });
        assert!(matches!(r, Err(CodecError::WorkerGone)));
        for _ in 0..3 {
            let c = Arc::new(AtomicUsize::new(0));
            let jobs: Vec<Job<u32>> = vec![counting(&c), counting(&c)];
            assert!(pool.run(&mut 0, jobs, |_| Ok(())).is_err());
        }
    }

    /// A worker that gets no CPU (gated here) starts none of its jobs: the caller takes them
    /// back (the frame after, the worker still owes, so the caller keeps its job), and the
    /// frame is coded on the calling thread alone: not sliced, on either side.
    #[test]
    fn a_frame_no_worker_took_part_in_is_not_sliced() {
        let (w, h) = (320u32, 240u32);
        let f = noisy(w, h, Subsampling::S420);
        let mut enc = Encoder::new(75, Subsampling::S420, false).unwrap();
        enc.set_threads(2).unwrap();
        let mut out = JpegBuf::default();
        let gate = enc.slices.as_ref().unwrap().pool.gate.clone();
        {
            let _held = gate.lock().unwrap();
            for what in ["taken back", "kept"] {
                let info = enc.encode(&f, &mut out).unwrap();
                assert!(!info.sliced, "every job {what}: coded on one thread, counted as sliced");
            }
        }
        let jpeg = out.as_slice().to_vec();
        let mut dec = Decoder::new().unwrap();
        dec.set_threads(2).unwrap();
        let mut px = Vec::new();
        let gate = dec.slices.as_ref().unwrap().pool.gate.clone();
        let _held = gate.lock().unwrap();
        for what in ["taken back", "kept"] {
            dec.decode(&jpeg, w as usize, h as usize, &mut px).unwrap();
            assert!(!dec.last_sliced(), "every piece {what}: decoded on one thread, counted as sliced");
        }
    }

    /// Balance never yields shares apportion treats as bad, whatever was measured.
    #[test]
    fn balance_shares_are_finite_and_positive() {
        let mut b = Balance::default();
        b.shares(3);
        for walls in [[Some(1u64), Some(u64::MAX), Some(1)], [Some(0), Some(1), None], [Some(1), Some(1), Some(1)]] {
            b.record(&[65535, 1, 0], &walls);
            let s = b.shares(3);
            assert!(s.iter().all(|x| x.is_finite() && *x > 0.0), "{s:?}");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod steer_follows_the_process_mask {
    use super::*;
    use std::mem::{size_of, zeroed};

    fn mask(tid: i32) -> libc::cpu_set_t {
        // SAFETY: an all-zero cpu_set_t is empty; the call writes at most its size.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        assert_eq!(unsafe { libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set) }, 0);
        set
    }
    fn only(cpu: usize) -> libc::cpu_set_t {
        let mut s: libc::cpu_set_t = unsafe { zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut s) };
        s
    }
    fn pin(tid: i32, s: &libc::cpu_set_t) {
        assert_eq!(unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), s) }, 0);
    }

    #[test]
    fn workers_are_kept_off_the_callers_cpu() {
        let usable = mask(0);
        // SAFETY: `usable` is a valid set.
        if unsafe { libc::CPU_COUNT(&usable) } < 2 {
            assert!(!crate::testutil::in_ci(), "this test needs 2 usable CPUs, the process has 1");
            return;
        }
        let mut pool = Pool::new("test", vec![0u32]).unwrap();
        let state = pool.steer.linux.as_ref().expect("one worker beside the caller is steered");
        let tid = state.tids[0];
        let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Ok(()))];
        pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
        let from = pool.steer.linux.as_ref().and_then(|s| s.away_from).expect("steered");
        let mut want = usable;
        // SAFETY: `from` came from sched_getcpu, within the set's size.
        unsafe { libc::CPU_CLR(from, &mut want) };
        assert!(mask(tid) == want, "the worker may run on every usable CPU but {from}");

        // Confined to one CPU: nothing to steer, the worker's mask is the caller's.
        let one = (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &usable) }).unwrap();
        let only = only(one);
        std::thread::spawn(move || {
            pin(0, &only);
            let mut pool = Pool::new("test", vec![0u32]).unwrap();
            assert!(pool.steer.linux.is_none(), "no CPU to keep a worker on");
            let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Ok(()))];
            pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
        })
        .join()
        .unwrap();
    }

    /// `taskset -a -p -c X PID` (or a cgroup cpuset change) after the pool started: the next
    /// frame on another CPU must not widen the workers again to the mask read at start.
    #[test]
    fn a_later_affinity_restriction_is_kept() {
        let usable = mask(0);
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &usable) }).collect();
        if cpus.len() < 2 {
            return;
        }
        std::thread::spawn(move || {
            let mut pool = Pool::new("t", vec![0u32]).unwrap();
            let tid = pool.steer.linux.as_ref().expect("steered").tids[0];
            let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Ok(()))];
            pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
            let from = pool.steer.linux.as_ref().and_then(|s| s.away_from).expect("steered");
            // Now the whole process (caller and worker) is confined to a CPU the caller was
            // not on: the caller moves there.
            let other = *cpus.iter().find(|&&c| c != from).unwrap();
            let user = only(other);
            pin(0, &user);
            pin(tid, &user);
            let jobs: Vec<Job<u32>> = vec![Box::new(|_: &mut u32| Ok(()))];
            pool.run(&mut 0, jobs, |_| Ok(())).unwrap();
            let now = mask(tid);
            let escaped = (0..libc::CPU_SETSIZE as usize)
                .any(|c| unsafe { libc::CPU_ISSET(c, &now) } && !unsafe { libc::CPU_ISSET(c, &user) });
            assert!(!escaped, "the worker left the CPUs the process was confined to");
        })
        .join()
        .unwrap();
    }
}
