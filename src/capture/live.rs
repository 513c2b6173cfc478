//! Live capture with libpcap (the `pcap` crate; feature `live`): one reading thread
//! per interface, packets handed to the caller over a bounded channel. When the
//! caller falls behind, the channel fills, the reader blocks and the kernel drops;
//! libpcap counts those drops, and [`LiveSource::stats`] reports them.

use super::{IfaceId, InterfaceDesc, Interfaces, Linktype};
use crate::error::CaptureError;
use crate::time::Ts;
use nix::poll::{poll, PollFd, PollFlags};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Capture options, named as tcpdump names them.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Interfaces (`any` for all).
    pub interfaces: Vec<String>,
    /// BPF filter (`-f`).
    pub filter: Option<String>,
    /// Snap length (`-s`).
    pub snaplen: i32,
    /// Promiscuous mode (tcpdump's default; `--no-promisc` turns it off).
    pub promisc: bool,
    /// Kernel buffer in KiB (`-B`).
    pub buffer_kib: i32,
}

/// A packet read live (owned: it crossed a thread).
#[derive(Debug)]
pub struct LivePacket {
    /// Index of the interface in [`LiveSource::interfaces`].
    pub iface: usize,
    /// Capture time.
    pub ts: Ts,
    /// Length on the wire.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: Vec<u8>,
}

/// What [`LiveSource::recv`] got.
#[derive(Debug)]
pub enum Received {
    /// A packet.
    Packet(LivePacket),
    /// Nothing within the wait.
    Nothing,
    /// Every reader has stopped.
    Ended,
}

/// Counters of one interface.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LiveStats {
    /// Interface name.
    pub name: String,
    /// Packets libpcap received.
    pub received: u64,
    /// Packets dropped because the buffer was full (kernel).
    pub dropped: u64,
    /// Packets dropped by the interface or driver.
    pub if_dropped: u64,
    /// Packets handed on.
    pub delivered: u64,
}

/// Packets from live interfaces.
pub struct LiveSource {
    rx: Receiver<LivePacket>,
    threads: Vec<JoinHandle<Option<String>>>,
    stop: Arc<AtomicBool>,
    interfaces: Interfaces,
    links: Vec<Linktype>,
    stats: Vec<Arc<Mutex<LiveStats>>>,
}

fn live_error(interface: &str, e: pcap::Error) -> CaptureError {
    let text = e.to_string();
    let hint = if text.contains("ermission") || text.contains("not permitted") {
        " (capturing needs root, or CAP_NET_RAW and CAP_NET_ADMIN on the binary: sudo setcap cap_net_raw,cap_net_admin=eip $(which flowtrace))"
    } else if text.contains("No such device")
        || text.contains("doesn't exist")
        || text.contains("no such device")
    {
        " (no such interface here: `ip link` lists them)"
    } else {
        ""
    };
    CaptureError::Live {
        interface: interface.to_string(),
        detail: format!("{text}{hint}"),
    }
}

/// How long a reader waits in poll(2) for the kernel to hand over packets before it
/// looks at the stop flag again: how soon a stop is seen on a quiet interface.
const READER_WAIT_MS: u16 = 50;
/// How often a reader refreshes its interface's counters from libpcap. Each refresh
/// reads the interface's counters from sysfs (libpcap opens several files for
/// `pcap_stats`); at one per empty read it was a third of an agent's CPU on a
/// loopback bench (`bench/nats_delay.py`, session 27).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// One interface's reader: packets to `tx` until `stop` or an error (returned).
///
/// When libpcap has nothing ready (with TPACKET_V3 the kernel hands over whole
/// blocks: one is full, or its timeout ran out) the reader sleeps in poll(2) on the
/// capture's descriptor, not in a fixed 1 ms sleep: those sleeps, a thousand wake-ups
/// a second whatever the traffic, were another quarter of the agent's CPU.
fn read_interface(
    i: usize,
    mut cap: pcap::Capture<pcap::Active>,
    tx: &SyncSender<LivePacket>,
    stop: &AtomicBool,
    stat: &Mutex<LiveStats>,
) -> Option<String> {
    let mut delivered = 0u64;
    let mut last_stats = Instant::now();
    let refresh = |cap: &mut pcap::Capture<pcap::Active>, delivered: u64| {
        if let Ok(mut s) = stat.lock() {
            s.delivered = delivered;
            if let Ok(st) = cap.stats() {
                s.received = u64::from(st.received);
                s.dropped = u64::from(st.dropped);
                s.if_dropped = u64::from(st.if_dropped);
            }
        }
    };
    let mut failure = None;
    while !stop.load(Ordering::Relaxed) {
        match cap.next_packet() {
            Ok(p) => {
                let ts = Ts::from_parts(p.header.ts.tv_sec, p.header.ts.tv_usec * 1000);
                let packet = LivePacket {
                    iface: i,
                    ts,
                    orig_len: p.header.len,
                    data: p.data.to_vec(),
                };
                if tx.send(packet).is_err() {
                    break;
                }
                delivered += 1;
            }
            Err(pcap::Error::TimeoutExpired) => {
                let mut fds = [PollFd::new(cap.as_fd(), PollFlags::POLLIN)];
                // EINTR and the like: the loop looks at the stop flag and reads again.
                let _ = poll(&mut fds, READER_WAIT_MS);
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            refresh(&mut cap, delivered);
        }
    }
    refresh(&mut cap, delivered);
    failure
}

impl LiveSource {
    /// Opens every interface (errors name the interface and, for permissions, what
    /// to grant) and starts reading; `stop` ends the readers.
    pub fn open(opts: &LiveOptions, stop: Arc<AtomicBool>) -> Result<LiveSource, CaptureError> {
        let (tx, rx) = sync_channel::<LivePacket>(65_536);
        let mut interfaces = Interfaces::default();
        let mut links = Vec::new();
        let mut stats = Vec::new();
        let mut captures = Vec::new();
        for (i, name) in opts.interfaces.iter().enumerate() {
            let mut cap = pcap::Capture::from_device(name.as_str())
                .map_err(|e| live_error(name, e))?
                .promisc(opts.promisc)
                .snaplen(opts.snaplen)
                .buffer_size(opts.buffer_kib.saturating_mul(1024))
                .timeout(100)
                .open()
                .map_err(|e| live_error(name, e))?;
            // As tcpdump does for `any`: SLL2 keeps each packet's interface index.
            if cap
                .list_datalinks()
                .is_ok_and(|l| l.contains(&pcap::Linktype(276)))
            {
                let _ = cap.set_datalink(pcap::Linktype(276));
            }
            if let Some(f) = &opts.filter {
                cap.filter(f, true).map_err(|e| live_error(name, e))?;
            }
            // Non-blocking: with TPACKET_V3, libpcap's read timeout only runs once a
            // packet has arrived, so a quiet interface would block the reader (and
            // the stop) forever. The reader waits in poll(2) instead, up to
            // `READER_WAIT_MS` at a time.
            let cap = cap.setnonblock().map_err(|e| live_error(name, e))?;
            let link = cap.get_datalink().0;
            interfaces.push(InterfaceDesc {
                file: 0,
                file_name: format!("live:{name}"),
                index_in_file: i as u32,
                name: Some(name.clone()),
                linktype: link,
            });
            links.push(Linktype(link));
            stats.push(Arc::new(Mutex::new(LiveStats {
                name: name.clone(),
                ..LiveStats::default()
            })));
            captures.push(cap);
        }
        let mut threads = Vec::new();
        for (i, cap) in captures.into_iter().enumerate() {
            let (tx, stop, stat) = (tx.clone(), stop.clone(), stats[i].clone());
            threads.push(std::thread::spawn(move || {
                read_interface(i, cap, &tx, &stop, &stat)
            }));
        }
        Ok(LiveSource {
            rx,
            threads,
            stop,
            interfaces,
            links,
            stats,
        })
    }

    /// The next packet, [`Received::Nothing`] after `wait` without one, or
    /// [`Received::Ended`] once every reader has stopped.
    pub fn recv(&self, wait: Duration) -> Received {
        match self.rx.recv_timeout(wait) {
            Ok(p) => Received::Packet(p),
            Err(RecvTimeoutError::Timeout) => Received::Nothing,
            Err(RecvTimeoutError::Disconnected) => Received::Ended,
        }
    }

    /// The interfaces, indexed like [`LivePacket::iface`].
    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    /// Link type of interface `i`.
    pub fn link(&self, i: usize) -> Linktype {
        self.links[i]
    }

    /// The [`IfaceId`] of interface `i`.
    pub fn iface_id(&self, i: usize) -> IfaceId {
        IfaceId(i as u32)
    }

    /// Counters per interface.
    pub fn stats(&self) -> Vec<LiveStats> {
        self.stats
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .collect()
    }

    /// Asks the readers to stop. Packets already queued are still delivered by
    /// [`LiveSource::recv`].
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the readers; returns the counters and the readers' errors, if any.
    pub fn finish(self) -> (Vec<LiveStats>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let LiveSource {
            rx, threads, stats, ..
        } = self;
        let mut errors = Vec::new();
        for t in threads {
            while !t.is_finished() {
                // A reader blocked on a full queue needs room to see the stop.
                while rx.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Ok(Some(e)) = t.join() {
                errors.push(e);
            }
        }
        let stats = stats
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .collect();
        (stats, errors)
    }
}

/// This host's interfaces (from /sys/class/net) with their addresses (from libpcap's
/// device list, which asks the kernel), to name SLL2 interface indexes as the
/// `ip -j addr` sidecar names them for files, and to know which host owns an address
/// (a VRRP holder is named by the interface that carries the VIP).
pub fn host_links() -> crate::links::HostLinks {
    let mut addresses: std::collections::HashMap<String, Vec<std::net::IpAddr>> =
        std::collections::HashMap::new();
    if let Ok(devices) = pcap::Device::list() {
        for d in devices {
            addresses
                .entry(d.name)
                .or_default()
                .extend(d.addresses.iter().map(|a| a.addr));
        }
    }
    let mut links = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let read = |f: &str| {
                std::fs::read_to_string(entry.path().join(f))
                    .map(|s| s.trim().to_string())
                    .ok()
            };
            let master = std::fs::read_link(entry.path().join("master"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            if let Some(ifindex) = read("ifindex").and_then(|i| i.parse().ok()) {
                links.push(crate::links::Link {
                    ifindex,
                    addresses: addresses.remove(&name).unwrap_or_default(),
                    ifname: name,
                    mac: read("address"),
                    master,
                });
            }
        }
    }
    links.sort_by_key(|l| l.ifindex);
    crate::links::HostLinks {
        path: "/sys/class/net".into(),
        links,
    }
}

/// Who the process runs as after [`drop_privileges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Becomes `user` for good, as tcpdump's `-Z` does once its devices are open: the
/// user's supplementary groups (initgroups), then its group, then its id, so that
/// capture code parsing hostile packets runs without root (and, switching away
/// from uid 0, without any capability). Open devices keep working. Afterwards,
/// regaining root is checked to fail. Returns `None` when the process is not root
/// (capabilities on the binary, the other set-up): there is nothing to drop.
pub fn drop_privileges(user: &str) -> Result<Option<Dropped>, CaptureError> {
    use nix::unistd::{geteuid, getuid, initgroups, setgid, setuid, Uid, User};
    let fail = |detail: String| CaptureError::Privileges {
        user: user.to_string(),
        detail,
    };
    if !getuid().is_root() && !geteuid().is_root() {
        return Ok(None);
    }
    let entry = User::from_name(user)
        .map_err(|e| fail(format!("looking the user up: {e}")))?
        .ok_or_else(|| fail("no such user".into()))?;
    let name = std::ffi::CString::new(user).map_err(|_| fail("a NUL in the name".into()))?;
    initgroups(&name, entry.gid).map_err(|e| fail(format!("initgroups: {e}")))?;
    setgid(entry.gid).map_err(|e| fail(format!("setgid({}): {e}", entry.gid)))?;
    setuid(entry.uid).map_err(|e| fail(format!("setuid({}): {e}", entry.uid)))?;
    if !entry.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(fail("root could be regained after setuid".into()));
    }
    Ok(Some(Dropped {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    }))
}
