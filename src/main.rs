//! `shipshape`: the command line. It parses arguments, calls the library crates, and turns
//! their results into output and exit codes (0 success, 1 the thing asked for failed, 2 usage).

mod bench;
mod cluster;
mod commitbench;
mod data;
mod dnsbench;
mod exec;
mod fleet;
mod fleetbench;
mod images;
mod ingressbench;
mod inspect;
mod kustomizebench;
mod podbench;
mod portforward;
mod pullbench;
mod remote;
mod render;
mod scale;
mod startup;
mod validate;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A GitOps-driven, Kubernetes-style cluster in one binary.
#[derive(Parser)]
#[command(name = "shipshape", version, about, propagate_version = true)]
struct Cli {
    /// The cluster's data directory (default: $SHIPSHAPE_DATA_DIR, else /var/lib/shipshape as
    /// root, else ~/.local/share/shipshape).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests the way the API server would, without a cluster.
    ///
    /// Reads files and folders (YAML with `---` documents, JSON, `kind: List`), reports every
    /// problem as `FILE:LINE: Kind ns/name: field.path: what is wrong`, and exits 1 if there is
    /// any. Folders directly under a PATH are applications.
    Validate {
        /// Files or folders to check.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print what a kustomization renders, as `kustomize build` prints it.
    ///
    /// PATH is a folder with a kustomization.yaml; its bases may be anywhere in the same
    /// repository. Nothing is fetched: remote bases, Helm charts and plugins are refused.
    Render {
        /// The kustomization's folder.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Start the cluster on the desired state in a Git repository.
    ///
    /// Follows a branch, tag or commit of the repository, polls it, and applies each changed
    /// application as one transaction; Ctrl-C stops it, and the next `up` resumes from the data
    /// directory.
    Up(Box<cluster::UpArgs>),
    /// Each application's sync state and the commit it is on.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = inspect::Output::Table)]
        output: inspect::Output,
    },
    /// Sync now (on a stopped cluster: one sync of its recorded repository).
    Sync {
        /// Let a commit delete every object of an application (held otherwise).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Stop syncing one application.
    Suspend {
        /// The application (folder) name.
        app: String,
    },
    /// Restart syncing one application.
    Resume {
        /// The application (folder) name.
        app: String,
    },
    /// List or show objects.
    Get {
        /// The kind: deployments, services, configmaps, … (kubectl's short names work).
        kind: String,
        /// One object's name.
        name: Option<String>,
        /// The namespace (default: default).
        #[arg(short, long, value_name = "NS")]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        /// After listing, print every change as it happens (needs a running cluster).
        #[arg(short, long, conflicts_with = "name")]
        watch: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = inspect::Output::Table)]
        output: inspect::Output,
    },
    /// Who changed what, when, in which commit, and what the cluster did.
    History {
        /// Only records about this object: KIND/NAMESPACE/NAME (or KIND/NAME).
        #[arg(long, value_name = "KIND/NS/NAME")]
        object: Option<String>,
        /// Only records from this time (RFC 3339) or this long ago (1h, 30m).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Model-check the reconciliation core: every interleaving and fault within the bounds.
    Verify,
    /// Measure the control plane (and etcd 3.4 beside it, for the ratio); prints figures.
    Bench(bench::BenchArgs),
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a container's output (stdout and stderr), as `kubectl logs` does.
    Logs {
        /// The pod.
        pod: String,
        /// The container (needed when the pod has several).
        #[arg(short, long, value_name = "CONTAINER")]
        container: Option<String>,
        /// Keep printing what the container writes until it stops.
        #[arg(short, long)]
        follow: bool,
        /// The previous run of a restarted container.
        #[arg(short, long)]
        previous: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// The namespace (default: default).
        #[arg(short, long, value_name = "NS")]
        namespace: Option<String>,
    },
    /// Run a command in a running container, exiting with its exit code.
    Exec {
        /// The pod.
        pod: String,
        /// The container (default: the first).
        #[arg(short, long, value_name = "CONTAINER")]
        container: Option<String>,
        /// Pass this process's stdin to the command (for a terminal, use `kubectl exec -it`).
        #[arg(short, long)]
        stdin: bool,
        /// The namespace (default: default).
        #[arg(short, long, value_name = "NS")]
        namespace: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Forward local ports to a pod's (or a Service's pod's), as `kubectl port-forward` does.
    PortForward {
        /// The pod (`NAME`, `pod/NAME`) or Service (`service/NAME`).
        target: String,
        /// `[LOCAL:]REMOTE`: 8080, 9000:80, :80 (any free local port), 8443:https.
        #[arg(required = true, value_name = "[LOCAL:]REMOTE", value_parser = portforward::parse_pair)]
        ports: Vec<portforward::PortPair>,
        /// The namespace (default: default).
        #[arg(short, long, value_name = "NS")]
        namespace: Option<String>,
        /// The local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
    },
    /// Container images: build one from a directory, import archives into the nodes.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The fleet this cluster is in, as its clusters published it in the repository.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout or `docker save` archive into every node (kept in the data
    /// directory, so later starts have it too).
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// Pull an image from its registry (or a mirror in the cluster's `--registry-config`)
    /// into every node of the running cluster, with progress.
    Pull {
        /// The image (`nginx:1.27`, `ghcr.io/org/app@sha256:…`).
        reference: String,
    },
    /// List the images each node of the running cluster holds.
    Ls,
    /// Build an OCI archive from a root filesystem directory (one layer).
    Pack {
        /// The root filesystem.
        dir: PathBuf,
        /// The image name, as pods refer to it (busybox:1.35).
        #[arg(long, value_name = "NAME:TAG")]
        tag: String,
        /// Where to write the archive.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; report the first altered or missing record.
    Verify,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Lines for people.
    Text,
    /// One JSON document for tools.
    Json,
}

/// `shipshape verify`: runs every model, prints what it explored and the verdict.
fn verify() -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut runs: Vec<(String, shipshape_model::verify::Run)> = Vec::new();
    for (name, model) in shipshape_model::verify::standard_models() {
        runs.push((
            name,
            Box::new(move |name: &str| shipshape_model::verify::check(name, model)),
        ));
    }
    runs.extend(shipshape_model::verify::workload_models());
    for (name, run) in runs {
        let verdict = run(&name);
        println!(
            "{}: {} states in {:.1} s: {}",
            verdict.name,
            verdict.states,
            verdict.elapsed.as_secs_f64(),
            if verdict.passed() {
                "every property holds"
            } else {
                "VIOLATED"
            }
        );
        for (property, steps) in &verdict.violations {
            failed = true;
            println!("  property violated: {property}\n  shortest trace:");
            for step in steps {
                println!("  {step}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// mimalloc instead of glibc's allocator: the control plane allocates and frees JSON values at
/// a high rate from several threads, and glibc's malloc/free took about a third of the CPU in
/// the scale benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long memory freed to mimalloc stays before it is returned to the system. mimalloc's
/// default (one second) made the scale benchmark return and fault in again gigabytes of
/// pages: about a sixth of its CPU went to the kernel zeroing pages. Under sustained churn the
/// memory is now reused; what stays idle for this long is still given back.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 30_000;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (libmimalloc-sys names only some
/// options; the version is pinned by Cargo.lock).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// `mi_option_allow_thp` in the same enum. mimalloc asks for transparent huge pages by
/// default; on a kernel whose THP mode is `madvise` (Debian's), every first touch of a 2 MiB
/// page then zeroes it whole and may compact memory to find one. In the scale benchmark that
/// was 4-10 s of system time against 3-4 s with ordinary pages; total CPU stayed the same
/// within the noise (more TLB misses cost some user time back), so the gain is steadiness.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

fn main() -> ExitCode {
    // SAFETY: mi_option_set only stores an option value; it is not thread safe, and no other
    // thread exists yet.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
    let cli = Cli::parse();
    // Warnings and errors by default; SHIPSHAPE_LOG (e.g. `debug`, `shipshape_actors=debug`)
    // shows more, down to a span per reconcile. The TLS verifier's own error lines are off:
    // a refused certificate reaches the pod's events with the reason already.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SHIPSHAPE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                // rustls warns of each client that sends an IP address as SNI (wrk, some
                // load balancers): legal to ignore, and the default certificate serves it.
                "warn,rustls_platform_verifier=off,rustls::msgs::handshake=error",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let data_dir = cli.data_dir.as_deref();
    let result = match cli.command {
        Command::Validate { paths, output } => validate::run(&paths, output),
        Command::Render { path } => render::run(&path),
        Command::Up(args) => cluster::up(&args, data_dir),
        Command::Status { output } => inspect::status(data_dir, output),
        Command::Sync { allow_empty } => cluster::sync_once(allow_empty, data_dir),
        Command::Suspend { app } => cluster::set_suspended(&app, true, data_dir),
        Command::Resume { app } => cluster::set_suspended(&app, false, data_dir),
        Command::Get {
            kind,
            namespace,
            all_namespaces,
            watch: true,
            output,
            ..
        } => inspect::watch(
            &kind,
            namespace.as_deref(),
            all_namespaces,
            output,
            data_dir,
        ),
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            ..
        } => inspect::get(
            &kind,
            name.as_deref(),
            namespace.as_deref(),
            all_namespaces,
            output,
            data_dir,
        ),
        Command::History {
            object,
            since,
            output,
        } => inspect::history(
            object.as_deref(),
            since.as_deref(),
            output == Format::Json,
            data_dir,
        ),
        Command::Audit {
            command: AuditCommand::Verify,
        } => inspect::audit_verify(data_dir),
        Command::Bench(args) => bench::run(&args),
        Command::Verify => verify(),
        Command::Fleet { command } => fleet::run(&command, data_dir).map(|()| ExitCode::SUCCESS),
        Command::Logs {
            pod,
            container,
            follow,
            previous,
            tail,
            namespace,
        } => inspect::logs(
            &pod,
            container.as_deref(),
            follow,
            previous,
            tail,
            namespace.as_deref(),
            data_dir,
        ),
        Command::Exec {
            pod,
            container,
            stdin,
            namespace,
            command,
        } => exec::run(
            &pod,
            container.as_deref(),
            namespace.as_deref(),
            stdin,
            &command,
            data_dir,
        ),
        Command::PortForward {
            target,
            ports,
            namespace,
            address,
        } => portforward::run(&target, &ports, namespace.as_deref(), &address, data_dir),
        Command::Image {
            command: ImageCommand::Import { file },
        } => images::import(&file, data_dir),
        Command::Image {
            command: ImageCommand::Pack { dir, tag, output },
        } => images::pack(&dir, &tag, &output),
        Command::Image {
            command: ImageCommand::Pull { reference },
        } => images::pull(&reference, data_dir),
        Command::Image {
            command: ImageCommand::Ls,
        } => images::list(data_dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shipshape: {error:#}");
            ExitCode::from(1)
        }
    }
}
