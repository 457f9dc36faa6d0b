//! Open files: the service raises its soft `RLIMIT_NOFILE` to the hard limit
//! at start-up and refuses a `max_connections` that cannot fit in it.
//!
//! NOTE: every connection is a descriptor, and so is every file the queue
//! opens while it syncs (the log, each new blob, the directories). With the
//! common soft limit of 1024 and the default `max_connections` of 1024, a
//! full house of connections made opening a blob fail with EMFILE — a
//! commit the queue must then refuse. Sizing the limit up front keeps
//! connections from starving the queue of descriptors.

/// Descriptors kept for everything but client connections: stdio, the
/// runtime (epoll, eventfd, signals), sled's files and those the syncer
/// opens, the ledger, Kafka's broker sockets and its wake-up pipes, the
/// mock capture file.
pub const RESERVED_FDS: u64 = 128;

/// Why the service cannot run with its connection limit.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error(
        "server.max_connections = {max_connections} needs {needed} open files \
         ({max_connections} connections + {RESERVED_FDS} for the queue, Kafka and the runtime), \
         but the open-file limit is {soft} (hard limit {hard}): lower server.max_connections \
         or raise the limit (`ulimit -n`, systemd `LimitNOFILE=`)"
    )]
    TooLow {
        max_connections: u64,
        needed: u64,
        soft: u64,
        hard: u64,
    },
    #[error("cannot read or raise the open-file limit: {0}")]
    Io(#[from] std::io::Error),
}

/// Raises the soft open-file limit to the hard one and checks that
/// `max_connections` fits; returns the limit now in force.
pub fn raise_and_check(max_connections: usize) -> Result<u64, FdLimitError> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let max_connections = max_connections as u64;
    let needed = max_connections.saturating_add(RESERVED_FDS);
    if needed > soft {
        return Err(FdLimitError::TooLow {
            max_connections,
            needed,
            soft,
            hard,
        });
    }
    Ok(soft)
}
