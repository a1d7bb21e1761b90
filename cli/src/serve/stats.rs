//! What the server counts, and logs on SIGUSR1: portpicker's server's statistics by
//! their names, then portlease's own.

/// The counters of the serving thread, which alone keeps them: plain numbers.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Requests that were not a pid (portpicker's `client-request-errors`).
    pub(super) client_request_errors: u64,
    /// Pids refused, for any reason (portpicker's `denied-allocations`).
    pub(super) denied_allocations: u64,
    /// Ports the last grant passed over by next-fit, the whole pool when none was
    /// free (portpicker's `num-ports-checked-for-last-request`).
    pub(super) ports_checked_for_last_request: usize,
    /// Ports handed out (portpicker's `total-allocations`).
    pub(super) total_allocations: u64,
    /// Of the denials: the pool was exhausted.
    pub(super) denied_pool_exhausted: u64,
    /// Of the denials: the pid was not the client's to ask for (another user's, a
    /// kernel thread, the server).
    pub(super) denied_not_permitted: u64,
    /// Of the denials: `--max-per-pid` or `--max-per-uid`.
    pub(super) denied_over_limit: u64,
    /// Registry transactions, and the most requests one of them served.
    pub(super) transactions: u64,
    pub(super) largest_transaction: usize,
}

/// What the accepting thread counts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ConnectionStats {
    /// Connections accepted, and those closed at once, the table full (`room`).
    pub(super) accepted: u64,
    pub(super) over_limit: u64,
    /// Connections closed to make room for newer ones (`room`).
    pub(super) evicted: u64,
    /// Failed accepts (out of descriptors, ...).
    pub(super) accept_errors: u64,
    /// Connections open when the statistics were asked for.
    pub(super) open: usize,
}

impl Stats {
    /// Logs every statistic as `NAME VALUE`, one a line, portpicker's first; `pool`
    /// is the number of ports managed, `held` the live leases this server gave.
    pub(super) fn log(&self, pool: usize, held: Option<usize>, connections: ConnectionStats) {
        log::info!("Dumping statistics:");
        let held = held.map_or_else(|| "unknown".to_string(), |n| n.to_string());
        let lines: [(&str, String); 18] = [
            (
                "client-request-errors",
                self.client_request_errors.to_string(),
            ),
            ("denied-allocations", self.denied_allocations.to_string()),
            ("num-ports-managed", pool.to_string()),
            (
                "num-ports-checked-for-last-request",
                self.ports_checked_for_last_request.to_string(),
            ),
            ("total-allocations", self.total_allocations.to_string()),
            ("leases-held", held),
            (
                "denied-pool-exhausted",
                self.denied_pool_exhausted.to_string(),
            ),
            (
                "denied-not-permitted",
                self.denied_not_permitted.to_string(),
            ),
            ("denied-over-limit", self.denied_over_limit.to_string()),
            ("transactions", self.transactions.to_string()),
            ("largest-transaction", self.largest_transaction.to_string()),
            ("connections-accepted", connections.accepted.to_string()),
            ("connections-open", connections.open.to_string()),
            ("connections-over-limit", connections.over_limit.to_string()),
            ("connections-evicted", connections.evicted.to_string()),
            ("accept-errors", connections.accept_errors.to_string()),
            ("pid", std::process::id().to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ];
        for (name, value) in lines {
            log::info!("{name} {value}");
        }
    }
}
