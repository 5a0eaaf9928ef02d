//! The `peerhub` binary: parse flags, set up logging, bind, serve until a signal;
//! or run a command (`peerhub audit verify`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use peerhub_server::config::{
    AuditCommand, Cli, ClusterCommand, Command, EscalationCommand, FolderOrCluster, GroupCommand,
    RotaCommand, RuntimeFlavor, Serving,
};
use peerhub_server::{audit, Server};
use tokio::net::TcpListener;

/// jemalloc instead of the system allocator: the hub allocates many small,
/// short-lived buffers across threads, where it measured 1.19x faster ingest
/// (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Before anything can create a file: everything the hub writes is owner-only.
    peerhub_server::file_modes::restrict_umask();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Audit(AuditCommand::Verify(args))) => match (&args.data, args.cluster) {
            (_, true) => audit_verify_cluster(&args),
            (Some(data), false) => audit_verify(data),
            (None, false) => {
                eprintln!("peerhub audit verify: give --data DIR, or --cluster");
                ExitCode::from(2)
            }
        },
        Some(Command::Rota(command)) => rota(command),
        Some(Command::Restore {
            from,
            at:
                FolderOrCluster {
                    config: Some(config),
                    ..
                },
        }) => cluster_restore(&config, &from),
        Some(Command::Backup {
            at:
                FolderOrCluster {
                    config: Some(config),
                    ..
                },
            out,
        }) => cluster_backup(&config, &out),
        Some(Command::Restore {
            from,
            at: FolderOrCluster {
                data: Some(data), ..
            },
        }) => restore(&from, &data),
        Some(Command::Erase { data, key }) => erase(&data, &key),
        Some(Command::Cluster(command)) => cluster(&command),
        Some(command) => operate(command),
        None => {
            let check_only = cli.serve.check_config;
            match cli.serve.into_serving() {
                Err(error) => {
                    eprintln!("peerhub: {error}");
                    ExitCode::from(2)
                }
                // A scheduled backup would copy this node's store alone: a
                // cluster's is `peerhub backup --config` (docs/CLUSTER.md §8).
                Ok(serving)
                    if serving.config.cluster.is_some()
                        && serving.config.backup.interval.is_some() =>
                {
                    eprintln!(
                        "peerhub: configuration: backup.interval_secs is set with \
                         cluster.nats_urls, but a scheduled backup would copy this node's \
                         store, not the cluster's data; leave backup.interval_secs unset on \
                         cluster nodes and run `peerhub backup --config FILE --out FILE` \
                         from a timer instead (docs/CLUSTER.md §8)"
                    );
                    ExitCode::from(2)
                }
                Ok(serving) if check_only => {
                    print!("{}", serving.settings.redacted());
                    println!("# configuration OK");
                    ExitCode::SUCCESS
                }
                Ok(serving) => serve_until_signal(serving),
            }
        }
    }
}

/// Operator requests that work on a running or a stopped server. Exit 0 done, 2
/// refused or failed.
fn operate(command: Command) -> ExitCode {
    use peerhub_server::admin::ops::AdminRequest;
    let absolute =
        |path: &std::path::Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (name, data, request, link) = match command {
        Command::Backup {
            at: FolderOrCluster {
                data: Some(data), ..
            },
            out,
        } => (
            "backup",
            data,
            AdminRequest::Backup {
                out: absolute(&out),
            },
            None,
        ),
        Command::Invite {
            data,
            role,
            group,
            hours,
            public_url,
        } => {
            let group = match group
                .map(|g| peerhub_protocol::GroupId::parse(&g))
                .transpose()
            {
                Ok(group) => group,
                Err(error) => {
                    eprintln!("peerhub invite: --group: {error}");
                    return ExitCode::from(2);
                }
            };
            // The link opens the group's join screen, and a staff invite's link says
            // so: the web client then asks the name colleagues will know them by.
            let mut fragment = String::new();
            if let Some(group) = &group {
                fragment.push_str(&format!("&group={group}"));
            }
            if !matches!(role, peerhub_server::config::InviteRoleArg::Member) {
                fragment.push_str("&staff=1");
            }
            let request = AdminRequest::Invite {
                role: role.into(),
                group,
                ttl_hours: Some(hours),
            };
            (
                "invite",
                data,
                request,
                Some(public_url.map(|url| (url, fragment))),
            )
        }
        Command::Export { data, key } => match peerhub_protocol::PublicKey::parse(&key) {
            Ok(key) => ("export", data, AdminRequest::Export { key }, None),
            Err(error) => {
                eprintln!("peerhub export: --key: {error}");
                return ExitCode::from(2);
            }
        },
        Command::Group(GroupCommand::Create {
            data,
            id,
            title,
            kind,
            agreement,
            access_code,
            no_waiting_room,
            history_days,
            ephemeral,
            windows,
        }) => {
            let group = match peerhub_protocol::GroupId::parse(&id) {
                Ok(group) => group,
                Err(error) => {
                    eprintln!("peerhub group create: --id: {error}");
                    return ExitCode::from(2);
                }
            };
            let agreement = match agreement.map(std::fs::read_to_string).transpose() {
                Ok(text) => text,
                Err(error) => {
                    eprintln!("peerhub group create: --agreement: {error}");
                    return ExitCode::from(2);
                }
            };
            let request = peerhub_protocol::payload::CreateGroupPayload {
                group,
                title,
                group_kind: kind.into(),
                agreement,
                access_code,
                schedule: windows,
                retention: peerhub_protocol::payload::Retention {
                    ephemeral,
                    history_days,
                },
                waiting_room: Some(!no_waiting_room),
                counter: 0,
                ts: 0,
            };
            let request = AdminRequest::GroupCreate {
                request: Box::new(request),
            };
            ("group create", data, request, None)
        }
        Command::Group(GroupCommand::Schedule {
            data,
            group,
            windows,
        }) => match peerhub_protocol::GroupId::parse(&group) {
            Ok(group) => (
                "group schedule",
                data,
                AdminRequest::GroupSchedule { group, windows },
                None,
            ),
            Err(error) => {
                eprintln!("peerhub group schedule: --group: {error}");
                return ExitCode::from(2);
            }
        },
        Command::Group(GroupCommand::ClearWaiting { data, group }) => {
            match peerhub_protocol::GroupId::parse(&group) {
                Ok(group) => (
                    "group clear-waiting",
                    data,
                    AdminRequest::GroupClearWaiting { group },
                    None,
                ),
                Err(error) => {
                    eprintln!("peerhub group clear-waiting: GROUP: {error}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Grant {
            data,
            key,
            group,
            revoke,
        } => {
            let key = match peerhub_protocol::PublicKey::parse(&key) {
                Ok(key) => key,
                Err(error) => {
                    eprintln!("peerhub grant: --key: {error}");
                    return ExitCode::from(2);
                }
            };
            let group = match peerhub_protocol::GroupId::parse(&group) {
                Ok(group) => group,
                Err(error) => {
                    eprintln!("peerhub grant: --group: {error}");
                    return ExitCode::from(2);
                }
            };
            let request = AdminRequest::FacilitatorGrant { key, group, revoke };
            ("grant", data, request, None)
        }
        Command::Group(GroupCommand::List { data }) => {
            ("group list", data, AdminRequest::GroupList, None)
        }
        Command::Escalation(EscalationCommand::List {
            data,
            all,
            state,
            limit,
        }) => {
            let filter = match (all, state) {
                (true, _) => peerhub_server::admin::escalations::EscalationFilter::All,
                (false, Some(state)) => state.into(),
                (false, None) => Default::default(),
            };
            let request = AdminRequest::EscalationList {
                filter,
                limit: Some(limit),
            };
            ("escalation list", data, request, None)
        }
        Command::Escalation(EscalationCommand::Resolve { data, id, outcome }) => (
            "escalation resolve",
            data,
            AdminRequest::EscalationResolve { id, outcome },
            None,
        ),
        Command::Audit(_)
        | Command::Backup { .. }
        | Command::Rota(_)
        | Command::Restore { .. }
        | Command::Erase { .. }
        | Command::Cluster(_) => return ExitCode::from(2),
    };
    match peerhub_server::admin::run(&data, request) {
        Ok(output) => {
            match (link, output.get("token").and_then(|t| t.as_str())) {
                (Some(Some((url, fragment))), Some(token)) => {
                    println!(
                        "{}#invite={token}{fragment}",
                        url.trim_end_matches('/').to_string() + "/"
                    );
                }
                (Some(None), Some(token)) => println!("{token}"),
                _ => println!(
                    "{}",
                    serde_json::to_string_pretty(&output).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("peerhub {name}: {error}");
            ExitCode::from(2)
        }
    }
}

/// `peerhub cluster check`: exit 0 fit, 1 not, 2 refused configuration.
fn cluster(command: &ClusterCommand) -> ExitCode {
    let settings = match command.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("peerhub cluster check: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peerhub cluster check: {error}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(peerhub_server::cluster::check::check(&settings));
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("peerhub cluster check: the cluster is not fit (see \"problem\" above)");
        ExitCode::from(1)
    }
}

/// Erasure needs the folder to itself: a running server holds members in memory.
fn erase(data: &std::path::Path, key: &str) -> ExitCode {
    let key = match peerhub_protocol::PublicKey::parse(key) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("peerhub erase: --key: {error}");
            return ExitCode::from(2);
        }
    };
    match peerhub_server::admin::erase(data, &key) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("peerhub erase: {error}");
            ExitCode::from(2)
        }
    }
}

/// A current-thread runtime for one command; `None` (said) if it cannot start.
fn command_runtime(name: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("peerhub {name}: {error}");
            None
        }
    }
}

/// `peerhub backup --config`: every stream and bucket of the cluster into one
/// file. Exit 0 written, 2 refused or failed (no file left behind).
fn cluster_backup(config: &std::path::Path, out: &std::path::Path) -> ExitCode {
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let done = cluster_command("backup", config, |settings, now_ms| async move {
        peerhub_server::cluster::backup::backup(&settings, &out, now_ms).await
    });
    if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `peerhub restore --config`: a cluster's backup into NATS servers that hold
/// none of peerhub's streams. Exit 0 restored, 2 refused or failed.
fn cluster_restore(config: &std::path::Path, from: &std::path::Path) -> ExitCode {
    let done = cluster_command("restore", config, |settings, now_ms| async move {
        peerhub_server::cluster::restore::restore(&settings, from, now_ms).await
    });
    if !done {
        return ExitCode::from(2);
    }
    eprintln!(
        "peerhub restore: start the nodes on fresh (empty) data folders; a folder \
         from before the restore is refused"
    );
    ExitCode::SUCCESS
}

/// Runs `peerhub NAME --config CONFIG` on a runtime of its own with the file's
/// `[cluster]` settings and the time now: prints what it returns as JSON, or
/// says why it could not. Whether it did.
fn cluster_command<T, E, F>(
    name: &str,
    config: &std::path::Path,
    run: impl FnOnce(peerhub_server::config::ClusterSettings, u64) -> F,
) -> bool
where
    T: serde::Serialize,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let settings = match peerhub_server::config::cluster_settings(Some(config)) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("peerhub {name}: {error}");
            return false;
        }
    };
    let Some(runtime) = command_runtime(name) else {
        return false;
    };
    let now_ms = peerhub_server::clock::Clock::system().now_ms();
    match runtime.block_on(run(settings, now_ms)) {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            true
        }
        Err(error) => {
            eprintln!("peerhub {name}: {error}");
            false
        }
    }
}

fn restore(from: &std::path::Path, data: &std::path::Path) -> ExitCode {
    let file = match std::fs::File::open(from) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("peerhub restore: {}: {error}", from.display());
            return ExitCode::from(2);
        }
    };
    // The data folder holds every conversation: owner-only.
    let created = {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
    };
    if let Err(error) = created {
        eprintln!("peerhub restore: {}: {error}", data.display());
        return ExitCode::from(2);
    }
    match peerhub_server::admin::restore(data, std::io::BufReader::new(file)) {
        Ok(summary) => {
            println!(
                "restored {} entries into {}; digest {}",
                summary.entries,
                data.display(),
                summary.digest
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("peerhub restore: {error}");
            ExitCode::from(2)
        }
    }
}

/// Exit 0: intact; 1: broken; 2: the folder could not be opened (clap also uses 2
/// for usage errors).
fn audit_verify(data: &std::path::Path) -> ExitCode {
    match audit::verify_data_dir(data) {
        Ok(Ok(report)) => {
            println!("audit chain OK: {report}");
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            println!(
                "audit chain BROKEN at entry {}: {}",
                broken.seq, broken.reason
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("peerhub audit verify: {error}");
            ExitCode::from(2)
        }
    }
}

/// `peerhub audit verify --cluster`: every chain in the cluster's audit stream.
/// Exit 0: all intact; 1: any broken; 2: NATS or the stream unreachable, or the
/// configuration refused.
fn audit_verify_cluster(args: &peerhub_server::config::AuditVerifyArgs) -> ExitCode {
    use peerhub_server::cluster::audit::{verify_cluster, ChainVerdict};
    let fail = |error: &dyn std::fmt::Display| {
        eprintln!("peerhub audit verify --cluster: {error}");
        ExitCode::from(2)
    };
    let settings = match args.cluster_settings() {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let verdicts = match runtime.block_on(verify_cluster(&settings)) {
        Ok(verdicts) => verdicts,
        Err(error) => return fail(&error),
    };
    let mut broken = false;
    for ChainVerdict { name, verdict } in &verdicts {
        match verdict {
            Ok(report) => println!("audit chain {}/{} OK: {report}", name.node, name.chain),
            Err(why) => {
                broken = true;
                println!("audit chain {}/{} BROKEN {why}", name.node, name.chain);
            }
        }
    }
    println!("{} audit chains in the cluster's stream", verdicts.len());
    if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Exit 0: done; 2: refused or the folder could not be used.
fn rota(command: RotaCommand) -> ExitCode {
    let result = match command {
        RotaCommand::List { data } => peerhub_server::admin::rota_list(&data).map(|rota| {
            println!(
                "{}",
                serde_json::to_string_pretty(&rota).unwrap_or_default()
            );
        }),
        RotaCommand::Set { data, file } => peerhub_server::admin::read_rota_file(&file)
            .and_then(|entries| {
                let count = entries.len();
                peerhub_server::admin::rota_set(&data, entries).map(|()| count)
            })
            .map(|count| println!("rota set: {count} entries")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peerhub rota: {error}");
            ExitCode::from(2)
        }
    }
}

fn serve_until_signal(serving: Serving) -> ExitCode {
    // On one CPU a current-thread runtime delivers sooner (see RuntimeFlavor).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match serving.config.runtime.resolve(cpus) {
        // The blocking pool's threads get their own name: no thread is then
        // called like a work-stealing worker (the crash tests look).
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("peerhub-blocking")
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peerhub: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(serving)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peerhub: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(serving: Serving) -> anyhow::Result<()> {
    peerhub_server::logging::init(serving.log_json);
    let Serving { listen, config, .. } = serving;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let data_dir = config.data_dir.clone();
    if let Some(settings) = &config.cluster {
        wait_for_nats(settings).await?;
    }
    let server = Server::start(listener, config).await?;

    // What the operator needs, on stdout (secrets included, never in the logs).
    println!("peerhub listening on {}", server.base_url());
    println!("data folder: {}", data_dir.display());
    if let Some(tls) = server.tls() {
        println!("TLS certificate SHA-256 fingerprint: {}", tls.fingerprint);
        println!("TLS certificate file: {}", tls.cert_path.display());
    }
    if let Some(node) = &server.hub().cluster {
        print_cluster_node(node, server.start_tokens().admin.is_some()).await;
    }
    for (what, link) in server.start_links() {
        println!("{what}: {link}");
    }
    let stop = shutdown_signal();
    println!("ready");

    // Not a committer clone: that would keep the commit thread (and the store)
    // open past the shutdown.
    let committer = server.hub().committer.fault_watch();
    server.run_until(stop).await;
    if let Some(fault) = committer.fault() {
        // Everything acknowledged is in the store; what was refused was never
        // acknowledged. The service manager restarts peerhub on the store.
        eprintln!(
            "peerhub: stopped after a storage fault ({}): every acknowledged write is in the \
             store; free space or fix the disk, then start peerhub again (see OPERATIONS.md, \
             \"When the disk fills or the store is damaged\")",
            fault.as_str()
        );
        std::process::exit(i32::from(peerhub_server::store_watch::EXIT_AFTER_FAULT));
    }
    Ok(())
}

/// Cluster mode, before anything else: waits until one of the NATS servers
/// answers, for as long as a node keeps trying to open the cluster's streams
/// (`cluster::node::OPEN_PATIENCE`); a node started with its NATS server (one
/// service manager starting both) then does not fail for being a moment early.
/// After that, an error naming the servers: the node serves nothing alone.
async fn wait_for_nats(settings: &peerhub_server::config::ClusterSettings) -> anyhow::Result<()> {
    use peerhub_server::cluster::{node::OPEN_PATIENCE, Nats};
    let patience = OPEN_PATIENCE;
    let until = tokio::time::Instant::now() + patience;
    let mut told = false;
    loop {
        match Nats::connect_with(settings, "start", std::time::Duration::from_secs(2)).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < until => {
                if !told {
                    // stderr: stdout is what a node prints once it serves.
                    eprintln!(
                        "peerhub: cluster node {}: NATS at {} does not answer yet ({error}); \
                         trying for up to {} s",
                        settings.node_name,
                        settings.nats_urls.join(", "),
                        patience.as_secs()
                    );
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => anyhow::bail!(
                "cluster node {}: no NATS server answered in {} s (tried {}): {error}. Start \
                 the NATS servers (bash scripts/cluster.sh start, or their service units), \
                 then start this node again; `peerhub cluster check` says which server is at \
                 fault",
                settings.node_name,
                patience.as_secs(),
                settings.nats_urls.join(", ")
            ),
        }
    }
}

/// Cluster mode: what the operator needs to know about this node, after the
/// listening line and before the links. The first-admin link is the cluster's
/// one: a node that did not make it says whether one is still unused or an
/// admin exists.
async fn print_cluster_node(node: &peerhub_server::cluster::node::ClusterNode, made_admin: bool) {
    let settings = &node.settings;
    println!(
        "cluster node: {} (this run: {})",
        settings.node_name, node.holder
    );
    println!(
        "NATS: reachable at {} ({} copies of every stream, lease {} ms)",
        settings.nats_urls.join(", "),
        settings.replicas,
        settings.lease_ttl.as_millis()
    );
    if made_admin {
        return;
    }
    match node.directory.has_admin().await {
        Ok(true) => println!("first admin: an admin exists"),
        Ok(false) => println!(
            "first admin: a link printed earlier (by this or another node) is still unused; \
             `peerhub invite --role admin --data DIR` on a running node makes another"
        ),
        Err(error) => println!("first admin: the directory could not say ({error})"),
    }
}

/// Registers the SIGTERM handler now (so a TERM sent once `ready` is printed is a
/// graceful stop, not the default kill) and returns the future that waits for it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Some(mut terminate) = terminate {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = interrupt.await;
    }
}
