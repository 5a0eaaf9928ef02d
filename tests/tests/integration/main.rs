//! Integration tests: the real server on `127.0.0.1:0`, real sockets.
//!
//! One test binary (faster to link), one module per area. New tests go in the
//! module of the behaviour they check; a test for a fixed bug goes in
//! `regression.rs` with the bug's story in its doc comment.

mod access_codes;
mod alerting;
mod audit;
mod bad_input;
mod cluster_audit;
mod cluster_backup;
mod cluster_check;
mod cluster_client_urls;
mod cluster_directory;
mod cluster_erase;
mod cluster_escalations;
mod cluster_jobs;
mod cluster_mirror;
mod cluster_nodes;
mod cluster_nodes_directory;
mod cluster_ops;
mod cluster_primitives;
mod cluster_process;
mod cluster_replica;
mod cluster_router_steps;
mod cluster_routing;
mod conversation;
mod counters;
mod crash;
mod erase;
mod escalation;
mod escalation_bounds;
mod escalation_ops;
mod export;
mod files;
mod formats;
mod groups;
mod history;
mod http;
mod invites;
mod limits;
mod login;
mod login_flood;
mod logs;
mod metrics;
mod operations;
mod push_ack;
mod resume;
mod retention;
mod safety_case;
mod shutdown;
mod staff;
mod storage_faults;
mod supervisor_line;
mod support_notes;
mod tls;
mod waiting_room;
mod wire_edges;
