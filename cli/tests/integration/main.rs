//! portlease's integration tests: one test binary, real processes, sockets and files.
//!
//! Every test works in a temp dir of its own and on ports of its own (see
//! `helpers::ports`), so tests run in parallel without meeting.

mod board;
mod bounds;
mod cli;
mod default_dir;
mod exec;
mod exec_handover;
mod exec_listen;
mod exit_codes;
mod first_use;
mod helpers;
mod messages;
mod output;
mod owners;
mod pid_namespaces;
mod read_only;
mod release;
mod salvage;
mod seed;
mod serve;
mod serve_users;
mod special_files;
mod unwritable_stderr;
mod worker;
