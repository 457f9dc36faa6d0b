//! A test-only FUSE filesystem that models what a power cut does.
//!
//! kill -9 keeps the kernel's page cache, so a crash test cannot see a
//! missing fsync. This in-memory filesystem keeps, per inode, the *durable*
//! state next to the *current* one:
//!
//! - a file's bytes become durable only with `fsync`/`fdatasync` of that file
//!   (FUSE `fsync`); `sync_file_range` never reaches a FUSE daemon;
//! - a directory's entries (creates, renames, unlinks, mkdir, rmdir) become
//!   durable only with an `fsync` of that directory (FUSE `fsyncdir`) — a new
//!   file whose parent was never synced vanishes at the cut, even if the file
//!   itself was synced.
//!
//! [`Handle::cut`] resets everything to its durable state. The kernel must
//! keep no copy of its own: every open answers `FOPEN_DIRECT_IO`, entry and
//! attribute TTLs are zero, and `fsync`/`fsyncdir` are implemented (a daemon
//! answering ENOSYS makes the kernel report every later fsync as success).
//! File locks are not implemented: without `FUSE_POSIX_LOCKS`/
//! `FUSE_FLOCK_LOCKS` in INIT (fuser never asks for them) the kernel keeps
//! `flock`/`fcntl` locks locally, which is what sled's `flock` needs.
//!
//! Use: [`PowercutFs::mount`], run the program under test with its files in
//! the mount, SIGKILL it (and reap it), then [`Handle::power_cut`] (unmount,
//! cut, mount a new session over the same state).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// The kernel keeps no entry or attribute longer than this.
const TTL: Duration = Duration::ZERO;
const BLOCK: usize = 64 * 1024;
const ROOT: u64 = 1;

/// File bytes in copy-on-write blocks: making them durable copies pointers,
/// not the file. Missing blocks read as zeros (sparse files).
#[derive(Clone, Default)]
struct Content {
    len: u64,
    blocks: Vec<Option<Arc<Vec<u8>>>>,
}

impl Content {
    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = (offset + size as u64).min(self.len);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let b = (pos / BLOCK as u64) as usize;
            let within = (pos % BLOCK as u64) as usize;
            let n = ((BLOCK - within) as u64).min(end - pos) as usize;
            match self.blocks.get(b).and_then(|x| x.as_ref()) {
                Some(block) => out.extend_from_slice(&block[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let b = (pos / BLOCK as u64) as usize;
            let within = (pos % BLOCK as u64) as usize;
            let n = (BLOCK - within).min(rest.len());
            if self.blocks.len() <= b {
                self.blocks.resize(b + 1, None);
            }
            let block = self.blocks[b].get_or_insert_with(|| Arc::new(vec![0; BLOCK]));
            Arc::make_mut(block)[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, len: u64) {
        if len < self.len {
            let keep = len.div_ceil(BLOCK as u64) as usize;
            self.blocks.truncate(keep);
            // Bytes past the new end read as zeros if the file grows again.
            let within = (len % BLOCK as u64) as usize;
            if within != 0 {
                if let Some(Some(block)) = self.blocks.last_mut() {
                    Arc::make_mut(block)[within..].fill(0);
                }
            }
        }
        self.len = len;
    }
}

struct Inode {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Current name (no hard links): for the paths of `fail_open`.
    parent: u64,
    name: OsString,
    data: Content,
    durable_data: Content,
    entries: BTreeMap<OsString, u64>,
    durable_entries: BTreeMap<OsString, u64>,
}

impl Inode {
    fn new(kind: FileType, perm: u16, req: Option<&Request>, parent: u64, name: &OsStr) -> Inode {
        let now = SystemTime::now();
        Inode {
            kind,
            perm,
            uid: req.map_or(0, |r| r.uid()),
            gid: req.map_or(0, |r| r.gid()),
            atime: now,
            mtime: now,
            ctime: now,
            parent,
            name: name.to_os_string(),
            data: Content::default(),
            durable_data: Content::default(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
        }
    }
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    next_fh: u64,
    /// Open handles: inode and open flags.
    handles: HashMap<u64, (u64, i32)>,
    fail_fsync: Option<i32>,
    fail_open: Option<(String, i32)>,
    fsyncs: u64,
    fsyncdirs: u64,
}

impl State {
    fn new() -> State {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode::new(FileType::Directory, 0o755, None, ROOT, OsStr::new("")),
        );
        State {
            inodes,
            next_ino: ROOT + 1,
            next_fh: 1,
            handles: HashMap::new(),
            fail_fsync: None,
            fail_open: None,
            fsyncs: 0,
            fsyncdirs: 0,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let i = self.inodes.get(&ino)?;
        let size = match i.kind {
            FileType::Directory => 4096,
            _ => i.data.len,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.ctime,
            kind: i.kind,
            perm: i.perm,
            nlink: if i.kind == FileType::Directory { 2 } else { 1 },
            uid: i.uid,
            gid: i.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&self, ino: u64) -> Result<&Inode, Errno> {
        match self.inodes.get(&ino) {
            Some(i) if i.kind == FileType::Directory => Ok(i),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<Option<u64>, Errno> {
        Ok(self.dir(parent)?.entries.get(name).copied())
    }

    /// Path relative to the mount root, `/`-separated, no leading slash.
    fn path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let Some(i) = self.inodes.get(&cur) else {
                break;
            };
            parts.push(i.name.to_string_lossy().into_owned());
            cur = i.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }

    fn open_refused(&self, path: &str) -> Option<Errno> {
        match &self.fail_open {
            Some((prefix, errno)) if path.starts_with(prefix.as_str()) => {
                Some(Errno::from_i32(*errno))
            }
            _ => None,
        }
    }

    fn new_handle(&mut self, ino: u64, flags: i32) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, flags));
        FileHandle(fh)
    }

    fn make_node(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        umask: u32,
    ) -> Result<u64, Errno> {
        if self.child(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let perm = (mode & !umask & 0o7777) as u16;
        self.inodes
            .insert(ino, Inode::new(kind, perm, Some(req), parent, name));
        let p = self.inodes.get_mut(&parent).ok_or(Errno::ENOENT)?;
        p.entries.insert(name.to_os_string(), ino);
        p.mtime = SystemTime::now();
        p.ctime = p.mtime;
        Ok(ino)
    }

    /// What a power cut leaves: durable bytes and durable entries, and only
    /// the inodes reachable through durable entries.
    fn cut(&mut self) {
        self.handles.clear();
        for i in self.inodes.values_mut() {
            i.data = i.durable_data.clone();
            i.entries = i.durable_entries.clone();
        }
        let mut reachable = HashMap::new();
        let mut stack = vec![(ROOT, ROOT, OsString::new())];
        while let Some((ino, parent, name)) = stack.pop() {
            if reachable.contains_key(&ino) {
                continue;
            }
            if let Some(i) = self.inodes.get(&ino) {
                for (n, c) in &i.entries {
                    stack.push((*c, ino, n.clone()));
                }
                reachable.insert(ino, (parent, name));
            }
        }
        self.inodes.retain(|ino, _| reachable.contains_key(ino));
        for (ino, (parent, name)) in reachable {
            if let Some(i) = self.inodes.get_mut(&ino) {
                i.parent = parent;
                i.name = name;
            }
        }
    }
}

/// The filesystem a FUSE session serves; its state outlives remounts.
pub struct PowercutFs {
    state: Arc<Mutex<State>>,
}

/// A mounted [`PowercutFs`]. Dropping it unmounts.
pub struct Handle {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in a request handler must not wedge every later request.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn mount_session(state: &Arc<Mutex<State>>, mountpoint: &Path) -> io::Result<BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("powercut".into()),
        MountOption::Subtype("powercut".into()),
        MountOption::RW,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    let fs = PowercutFs {
        state: state.clone(),
    };
    fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mount FUSE at {}: {e}", mountpoint.display()),
        )
    })
}

impl PowercutFs {
    /// Mounts an empty filesystem at `mountpoint` (an existing directory),
    /// served by a background thread. Fails without root, without
    /// `/dev/fuse`, or without a FUSE-capable kernel.
    pub fn mount(mountpoint: &Path) -> io::Result<Handle> {
        let state = Arc::new(Mutex::new(State::new()));
        let session = mount_session(&state, mountpoint)?;
        Ok(Handle {
            state,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }
}

impl Handle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Forgets every volatile state: bytes not fsynced, directory entries
    /// whose directory was not fsynced, open handles. Kills nothing: kill
    /// (and reap) the processes using the mount first, and prefer
    /// [`Handle::power_cut`], which also gives the kernel a fresh mount.
    pub fn cut(&self) {
        lock(&self.state).cut();
    }

    /// Unmounts (retrying while the mount is busy, up to 10 s) and waits for
    /// the session thread to end. No-op when not mounted.
    pub fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let c_path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            let busy = err.raw_os_error() == Some(libc::EBUSY);
            if !busy || Instant::now() >= deadline {
                self.session = Some(session);
                return Err(io::Error::new(
                    err.kind(),
                    format!("unmount {}: {err}", self.mountpoint.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !session.guard.is_finished() {
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "FUSE session of {} did not end within 10 s of the unmount",
                    self.mountpoint.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        session.join()
    }

    /// Mounts a new session over the same state. No-op when mounted.
    pub fn mount(&mut self) -> io::Result<()> {
        if self.session.is_none() {
            self.session = Some(mount_session(&self.state, &self.mountpoint)?);
        }
        Ok(())
    }

    /// A power cut: unmount, [`Handle::cut`], mount again.
    pub fn power_cut(&mut self) -> io::Result<()> {
        self.unmount()?;
        self.cut();
        self.mount()
    }

    /// While `Some(errno)`, every `fsync`, `fdatasync` and directory fsync
    /// answers that errno (and makes nothing durable).
    pub fn fail_fsync(&self, errno: Option<i32>) {
        lock(&self.state).fail_fsync = errno;
    }

    /// While `Some((prefix, errno))`, opening an existing file or directory
    /// (open, opendir) whose path relative to the mount root (`queue/db`, no
    /// leading slash) starts with `prefix` answers `errno`. Creating a new
    /// file is not refused: a writer can still create what a reader (the
    /// queue's syncer) then fails to open.
    pub fn fail_open(&self, prefix: Option<(String, i32)>) {
        lock(&self.state).fail_open = prefix;
    }

    /// fsync and fsyncdir requests answered so far (failed ones included).
    pub fn sync_counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.fsyncs, s.fsyncdirs)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("powercut_fs: {e}");
        }
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PowercutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = lock(&self.state);
        match s.child(parent.0, name) {
            Ok(Some(ino)) => match s.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match lock(&self.state).attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = lock(&self.state);
        let Some(i) = s.inodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size {
            if i.kind == FileType::Directory {
                return reply.error(Errno::EISDIR);
            }
            i.data.truncate(size);
            i.mtime = SystemTime::now();
        }
        if let Some(m) = mode {
            i.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            i.uid = u;
        }
        if let Some(g) = gid {
            i.gid = g;
        }
        if let Some(t) = atime {
            i.atime = time(t);
        }
        if let Some(t) = mtime {
            i.mtime = time(t);
        }
        i.ctime = ctime.unwrap_or_else(SystemTime::now);
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let mut s = lock(&self.state);
        match s.make_node(req, parent.0, name, FileType::RegularFile, mode, umask) {
            Ok(ino) => match s.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = lock(&self.state);
        match s.make_node(req, parent.0, name, FileType::Directory, mode, umask) {
            Ok(ino) => match s.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = lock(&self.state);
        let ino = match s.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        if s.inodes.get(&ino).map(|i| i.kind) == Some(FileType::Directory) {
            return reply.error(Errno::EISDIR);
        }
        // The inode stays: open handles still use it, and a durable entry
        // may still name it (the cut brings it back).
        if let Some(p) = s.inodes.get_mut(&parent.0) {
            p.entries.remove(name);
            p.mtime = SystemTime::now();
        }
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = lock(&self.state);
        let ino = match s.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match s.inodes.get(&ino) {
            Some(i) if i.kind != FileType::Directory => return reply.error(Errno::ENOTDIR),
            Some(i) if !i.entries.is_empty() => return reply.error(Errno::ENOTEMPTY),
            _ => {}
        }
        if let Some(p) = s.inodes.get_mut(&parent.0) {
            p.entries.remove(name);
            p.mtime = SystemTime::now();
        }
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.state);
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let ino = match s.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        let target = match s.child(newparent.0, newname) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        if let Some(t) = target {
            if t == ino {
                return reply.ok();
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            let src_dir = s.inodes.get(&ino).map(|i| i.kind) == Some(FileType::Directory);
            match s.inodes.get(&t) {
                Some(ti) if ti.kind == FileType::Directory && !src_dir => {
                    return reply.error(Errno::EISDIR)
                }
                Some(ti) if ti.kind != FileType::Directory && src_dir => {
                    return reply.error(Errno::ENOTDIR)
                }
                Some(ti) if ti.kind == FileType::Directory && !ti.entries.is_empty() => {
                    return reply.error(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        let now = SystemTime::now();
        if let Some(p) = s.inodes.get_mut(&parent.0) {
            p.entries.remove(name);
            p.mtime = now;
        }
        if let Some(p) = s.inodes.get_mut(&newparent.0) {
            p.entries.insert(newname.to_os_string(), ino);
            p.mtime = now;
        }
        if let Some(i) = s.inodes.get_mut(&ino) {
            i.parent = newparent.0;
            i.name = newname.to_os_string();
            i.ctime = now;
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = lock(&self.state);
        let kind = match s.inodes.get(&ino.0) {
            Some(i) => i.kind,
            None => return reply.error(Errno::ENOENT),
        };
        if kind == FileType::Directory {
            return reply.error(Errno::EISDIR);
        }
        if let Some(e) = s.open_refused(&s.path(ino.0)) {
            return reply.error(e);
        }
        if flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            if let Some(i) = s.inodes.get_mut(&ino.0) {
                i.data.truncate(0);
            }
        }
        let fh = s.new_handle(ino.0, flags.0);
        reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = lock(&self.state);
        let ino = match s.child(parent.0, name) {
            Ok(Some(_)) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(Some(ino)) => {
                match s.inodes.get_mut(&ino) {
                    Some(i) if i.kind == FileType::Directory => return reply.error(Errno::EISDIR),
                    Some(i) if flags & libc::O_TRUNC != 0 => i.data.truncate(0),
                    _ => {}
                }
                ino
            }
            Ok(None) => {
                match s.make_node(req, parent.0, name, FileType::RegularFile, mode, umask) {
                    Ok(ino) => ino,
                    Err(e) => return reply.error(e),
                }
            }
            Err(e) => return reply.error(e),
        };
        let fh = s.new_handle(ino, flags);
        match s.attr(ino) {
            Some(a) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::EIO),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = lock(&self.state);
        match s.inodes.get(&ino.0) {
            Some(i) if i.kind == FileType::Directory => reply.error(Errno::EISDIR),
            Some(i) => reply.data(&i.data.read(offset, size as usize)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = lock(&self.state);
        let append = flags.0 & libc::O_APPEND != 0
            || s.handles
                .get(&fh.0)
                .is_some_and(|(_, f)| f & libc::O_APPEND != 0);
        let Some(i) = s.inodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if i.kind == FileType::Directory {
            return reply.error(Errno::EISDIR);
        }
        let offset = if append { i.data.len } else { offset };
        i.data.write(offset, data);
        i.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.state);
        s.fsyncs += 1;
        if let Some(errno) = s.fail_fsync {
            return reply.error(Errno::from_i32(errno));
        }
        match s.inodes.get_mut(&ino.0) {
            Some(i) => {
                // The file's bytes only: its name is the parent's business.
                i.durable_data = i.data.clone();
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = lock(&self.state);
        if let Err(e) = s.dir(ino.0) {
            return reply.error(e);
        }
        if let Some(e) = s.open_refused(&s.path(ino.0)) {
            return reply.error(e);
        }
        let fh = s.new_handle(ino.0, flags.0);
        reply.opened(fh, FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = lock(&self.state);
        let dir = match s.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (dir.parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in &dir.entries {
            let kind = s
                .inodes
                .get(child)
                .map_or(FileType::RegularFile, |i| i.kind);
            all.push((*child, kind, name.clone()));
        }
        for (k, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (k + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.state);
        s.fsyncdirs += 1;
        if let Some(errno) = s.fail_fsync {
            return reply.error(Errno::from_i32(errno));
        }
        match s.inodes.get_mut(&ino.0) {
            Some(i) if i.kind == FileType::Directory => {
                i.durable_entries = i.entries.clone();
                reply.ok();
            }
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB in 4 KiB blocks, mostly free.
        let blocks = 16 * 1024 * 1024;
        reply.statfs(
            blocks,
            blocks / 2,
            blocks / 2,
            1 << 20,
            1 << 19,
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if lock(&self.state).inodes.contains_key(&ino.0) {
            reply.ok();
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.state);
        let Some(i) = s.inodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if mode == 0 {
            let end = offset + length;
            if end > i.data.len {
                // Sparse growth: reads zeros.
                i.data.truncate(end);
            }
            reply.ok();
        } else if mode == libc::FALLOC_FL_KEEP_SIZE {
            reply.ok();
        } else {
            reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
    }
}
