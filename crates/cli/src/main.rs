//! `cloudmart`: run the whole system on a laptop, and check it.
//!
//! - `cloudmart up` starts all six services in one process.
//! - `cloudmart smoke` places orders through the gateway like the workshop's
//!   curl loop and fails unless every one succeeds within the SLA.
//! - `cloudmart load` drives open-loop, fixed-rate traffic and reports
//!   latency percentiles and status codes.
//! - `cloudmart doctor manifests` checks Kubernetes YAML; `cloudmart doctor
//!   cluster` runs the same rules on a live namespace, adds pod states,
//!   endpoints and restarts, places orders through the gateway, and scores
//!   every catalogued fault.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cloudmart_cli::smoke::{self, SmokeConfig};
use cloudmart_cli::stack::{Ports, Stack};
use cloudmart_config::{Env, ProcessEnv};

#[derive(Parser)]
#[command(name = "cloudmart", version, about = "Run, check and load CloudMart")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start all six services in this process (ctrl-c stops them).
    Up {
        /// Gateway port.
        #[arg(long, default_value_t = Ports::LOCAL.gateway)]
        gateway_port: u16,
    },
    /// Place orders through the gateway and check each one.
    Smoke {
        /// Gateway base URL.
        #[arg(long, env = "CLOUDMART_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Number of orders.
        #[arg(long, default_value_t = 20)]
        orders: u32,
        /// Pause between orders, in milliseconds.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Slowest acceptable answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        sla_ms: u64,
    },
    /// Check Kubernetes manifests, or a live cluster, for faults.
    Doctor {
        #[command(subcommand)]
        what: Doctor,
    },
    /// Workshop scenarios: list them, show one, or reveal a hint.
    Scenario {
        #[command(subcommand)]
        what: Scenario,
    },
    /// Print every service's environment variables as Markdown tables.
    EnvDocs,
    /// Send open-loop, fixed-rate traffic and report latency and statuses.
    Load {
        /// Gateway base URL.
        #[arg(long, env = "CLOUDMART_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Requests per second.
        #[arg(long, env = "LOAD_RATE", default_value_t = 50.0)]
        rate: f64,
        /// Seconds to run; 0 runs until ctrl-c or SIGTERM.
        #[arg(long, env = "LOAD_DURATION_SECS", default_value_t = 30)]
        duration_secs: u64,
        /// Traffic mix: orders, mixed or login-heavy.
        #[arg(long, env = "LOAD_PROFILE", default_value = "orders")]
        profile: String,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Requests allowed in flight before new ones count as dropped.
        #[arg(long, default_value_t = 1000)]
        max_inflight: usize,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// No live progress line.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
enum Doctor {
    /// Statically analyse a directory (or file) of Kubernetes YAML.
    ///
    /// Exit codes: 0 no findings, 1 findings, 2 the input could not be read.
    Manifests {
        /// Directory of *.yaml files, or one file.
        path: std::path::PathBuf,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// Print the first N hints of each catalogued fault found.
        #[arg(long, default_value_t = 0)]
        hints: usize,
        /// Fault catalogue to match findings against (default: the built-in one).
        #[arg(long)]
        catalogue: Option<std::path::PathBuf>,
        /// Build script whose images count as built (default: scripts/images.sh if present).
        #[arg(long)]
        build_script: Option<std::path::PathBuf>,
    },
    /// Check a live namespace and score every catalogued fault.
    ///
    /// Runs the `manifests` rules on the live objects, adds what only a
    /// running cluster shows (CrashLoopBackOff, ImagePullBackOff, OOMKilled,
    /// restarts within --window, failing probes, Services without ready
    /// endpoints, pods running a ConfigMap's old values), places orders
    /// through the gateway, and prints FIXED, PRESENT or NOT ACCEPTED per
    /// fault, then HEALTHY or NOT HEALTHY.
    ///
    /// Exit codes: 0 healthy, 1 not healthy, 2 bad arguments or unreadable
    /// catalogue, 3 the cluster could not be read (no kubeconfig, API
    /// server unreachable, access denied).
    Cluster {
        /// Namespace the scenario runs in.
        #[arg(long, default_value = "production")]
        namespace: String,
        /// kubeconfig context to use (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// Gateway base URL for the smoke check (k3d's load balancer by default).
        #[arg(long, env = "CLOUDMART_URL", default_value = "http://localhost:8080")]
        gateway: String,
        /// Seconds back that restarts and probe failures count.
        #[arg(long, default_value_t = 300)]
        window: u64,
        /// Check again every --interval seconds, redrawing the screen.
        #[arg(long)]
        watch: bool,
        /// Seconds between checks with --watch.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Orders the smoke check places (it stops at the first failure).
        #[arg(long, default_value_t = 5)]
        orders: u32,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// Print each fault's state only, without its title or reasons (for a
        /// projector while groups are still hunting).
        #[arg(long)]
        hide_answers: bool,
        /// Fault catalogue to score (default: the built-in one).
        #[arg(long)]
        catalogue: Option<std::path::PathBuf>,
        /// Judge time windows as of this RFC 3339 instant instead of now
        /// (replaying recorded API objects).
        #[arg(long, hide = true)]
        at: Option<String>,
    },
    /// List every field that differs between two manifest directories
    /// (for instance k8s/ and a trainee's fixed copy).
    Diff {
        /// The reference directory.
        left: std::path::PathBuf,
        /// The directory to compare.
        right: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum Scenario {
    /// List the scenarios.
    List,
    /// Show a scenario and its faults, without the answers.
    Show {
        /// Scenario id.
        id: String,
    },
    /// Reveal hint N (1-3) of one fault.
    Hint {
        /// Scenario id.
        id: String,
        /// Fault id, e.g. F3.
        fault: String,
        /// Hint number, 1 to 3.
        n: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { gateway_port } => up(gateway_port).await,
        Command::Smoke {
            url,
            orders,
            interval_ms,
            sla_ms,
        } => {
            let config = SmokeConfig {
                url,
                orders,
                interval: Duration::from_millis(interval_ms),
                sla: Duration::from_millis(sla_ms),
            };
            smoke_cmd(&config).await
        }
        Command::Doctor {
            what:
                Doctor::Manifests {
                    path,
                    format,
                    hints,
                    catalogue,
                    build_script,
                },
        } => doctor_manifests(
            &path,
            &format,
            hints,
            catalogue.as_deref(),
            build_script.as_deref(),
        ),
        Command::Doctor {
            what:
                Doctor::Cluster {
                    namespace,
                    context,
                    gateway,
                    window,
                    watch,
                    interval,
                    orders,
                    format,
                    hide_answers,
                    catalogue,
                    at,
                },
        } => {
            let args = ClusterArgs {
                namespace,
                context,
                gateway,
                window: Duration::from_secs(window),
                watch: watch.then(|| Duration::from_secs(interval.max(1))),
                orders,
                format,
                hide_answers,
                catalogue,
                at,
            };
            doctor_cluster(args).await
        }
        Command::Scenario { what } => scenario(what),
        Command::Doctor {
            what: Doctor::Diff { left, right },
        } => doctor_diff(&left, &right),
        Command::EnvDocs => {
            println!("{}", cloudmart_cli::docs::env_tables());
            ExitCode::SUCCESS
        }
        Command::Load {
            url,
            rate,
            duration_secs,
            profile,
            timeout_ms,
            max_inflight,
            json,
            quiet,
        } => {
            let profile = match profile.parse::<cloudmart_load::Profile>() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("cloudmart load: {e}");
                    return ExitCode::from(2);
                }
            };
            let forever = duration_secs == 0;
            let config = cloudmart_load::LoadConfig {
                rate_per_sec: rate,
                duration: if forever {
                    Duration::from_secs(10 * 365 * 86_400)
                } else {
                    Duration::from_secs(duration_secs)
                },
                profile,
                timeout: Duration::from_millis(timeout_ms),
                max_inflight,
                progress: !quiet && !json,
                ..cloudmart_load::LoadConfig::new(url)
            };
            load_cmd(&config, json).await
        }
    }
}

async fn load_cmd(config: &cloudmart_load::LoadConfig, json: bool) -> ExitCode {
    let report =
        match cloudmart_load::run_until(config, cloudmart_http::server::shutdown_signal()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cloudmart load: {e}");
                return ExitCode::from(2);
            }
        };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_text());
    }
    ExitCode::SUCCESS
}

async fn up(gateway_port: u16) -> ExitCode {
    let env = ProcessEnv;
    let _guard = match cloudmart_telemetry::init("cloudmart", &env) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cloudmart: {e}");
            return ExitCode::from(1);
        }
    };
    let ports = Ports {
        gateway: gateway_port,
        ..Ports::LOCAL
    };
    let stack = match Stack::start(ports, &env).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cloudmart: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!();
    eprintln!("CloudMart is running. Services:");
    for s in &stack.services {
        eprintln!("  {:<22} {}", s.name, s.url());
    }
    eprintln!();
    eprintln!(
        "Try:   curl -X POST {}/api/orders -H 'Content-Type: application/json' -d '{{\"item\":\"laptop\",\"quantity\":1}}'",
        stack.gateway_url()
    );
    eprintln!("Check: cloudmart smoke (or make smoke) in a second terminal");
    if let Some(file) = store_file(&env) {
        eprintln!("Data:  {file} (make clean-data empties it)");
    }
    eprintln!("Logs:  below; grep a response's trace id to follow one request");
    eprintln!("Stop:  ctrl-c");
    eprintln!();
    cloudmart_http::server::shutdown_signal().await;
    stack.stop().await;
    ExitCode::SUCCESS
}

/// The embedded store's file as database-service names it, or `None` when
/// orders go to MongoDB.
fn store_file(env: &dyn Env) -> Option<String> {
    let set = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
    if set(cloudmart_database::mongo::MONGODB_URI.var.name).is_some() {
        return None;
    }
    let dir = set(cloudmart_database::DATA_DIR.var.name)
        .or_else(|| cloudmart_database::DATA_DIR.var.default.map(str::to_owned))?;
    let db = set(cloudmart_database::DB_NAME.var.name)
        .unwrap_or_else(|| cloudmart_cli::stack::DEFAULT_DB_NAME.to_owned());
    Some(format!("{}/{db}.jsonl", dir.trim_end_matches('/')))
}

async fn smoke_cmd(config: &SmokeConfig) -> ExitCode {
    println!(
        "Placing {} orders through {} (SLA {} ms)",
        config.orders,
        config.url,
        config.sla.as_millis()
    );
    let lines = smoke::run(config, |l| {
        println!("{}", smoke::format_line(l, config.orders, config.sla))
    })
    .await;
    let ok = lines.iter().filter(|l| l.ok(config.sla)).count();
    let slowest = lines.iter().map(|l| l.latency).max().unwrap_or_default();
    println!(
        "{ok}/{} orders succeeded; slowest {:.1} ms (limit {} ms)",
        config.orders,
        slowest.as_secs_f64() * 1000.0,
        config.sla.as_millis()
    );
    if ok == lines.len() && !lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn load_catalogue(
    path: Option<&std::path::Path>,
) -> Result<cloudmart_doctor::catalogue::Catalogue, String> {
    match path {
        Some(p) => cloudmart_doctor::catalogue::Catalogue::load(p),
        None => cloudmart_doctor::catalogue::Catalogue::built_in(),
    }
}

/// The images that count as built: those of `build_script`, else of
/// scripts/images.sh when run from a checkout, else every
/// service's `:latest`.
fn rules_context(
    build_script: Option<&std::path::Path>,
) -> Result<cloudmart_doctor::rules::Context, String> {
    use cloudmart_doctor::rules::Context;
    let script = build_script
        .map(std::path::Path::to_path_buf)
        .or_else(|| Some(std::path::PathBuf::from("scripts/images.sh")).filter(|p| p.exists()));
    Ok(match script {
        Some(p) => Context::from_build_script(
            &std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => Context::default(),
    })
}

fn doctor_manifests(
    path: &std::path::Path,
    format: &str,
    hints: usize,
    catalogue: Option<&std::path::Path>,
    build_script: Option<&std::path::Path>,
) -> ExitCode {
    let loaded = cloudmart_doctor::model::Manifests::load(path).and_then(|m| {
        let catalogue = load_catalogue(catalogue)?;
        let context = rules_context(build_script)?;
        Ok((m, catalogue, context))
    });
    let (manifests, catalogue, context) = match loaded {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cloudmart doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let mut findings = cloudmart_doctor::rules::check(&manifests, &context);
    catalogue.tag(&mut findings);
    if format == "json" {
        println!("{}", serde_json::json!({"findings": findings}));
    } else {
        for f in &findings {
            let fault = f
                .fault
                .as_deref()
                .map(|id| format!(" (fault {id})"))
                .unwrap_or_default();
            println!(
                "{}:{}: [{}] {}: {}{fault}",
                f.file, f.line, f.rule, f.object, f.message
            );
            if let Some(fault) = f.fault.as_deref().and_then(|id| catalogue.fault(id)) {
                for (n, hint) in fault.hints.iter().take(hints).enumerate() {
                    println!("    hint {}: {hint}", n + 1);
                }
            }
        }
        println!("{} finding(s)", findings.len());
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `doctor cluster`'s arguments.
struct ClusterArgs {
    namespace: String,
    context: Option<String>,
    gateway: String,
    window: Duration,
    /// The interval, with --watch.
    watch: Option<Duration>,
    orders: u32,
    format: String,
    hide_answers: bool,
    catalogue: Option<std::path::PathBuf>,
    at: Option<String>,
}

/// Exit code of `doctor cluster` when the cluster cannot be read.
const CLUSTER_UNREADABLE: u8 = 3;

async fn doctor_cluster(args: ClusterArgs) -> ExitCode {
    use cloudmart_doctor::cluster::{Checker, Cluster, Options, Timestamp};
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            eprintln!("cloudmart doctor: --format {other:?}: expected text or json");
            return ExitCode::from(2);
        }
    };
    let at = match args.at.as_deref().map(str::parse::<Timestamp>).transpose() {
        Ok(at) => at,
        Err(e) => {
            eprintln!("cloudmart doctor: --at: {e}");
            return ExitCode::from(2);
        }
    };
    let setup =
        load_catalogue(args.catalogue.as_deref()).and_then(|c| Ok((c, rules_context(None)?)));
    let (catalogue, rules) = match setup {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cloudmart doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let cluster = match Cluster::connect(args.context.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloudmart doctor: {e}");
            return ExitCode::from(CLUSTER_UNREADABLE);
        }
    };
    let options = Options {
        namespace: args.namespace.clone(),
        window: args.window,
    };
    let mut checker = Checker::new(cluster, catalogue, rules, options);
    let sla = Duration::from_millis(2000);
    let smoke = || smoke::gateway_check(&args.gateway, args.orders, sla);
    let print = |board: &cloudmart_doctor::cluster::scoreboard::Scoreboard| {
        if json {
            println!("{}", board.to_json());
        } else if args.hide_answers {
            print!("{}", board.render_text_without_answers());
        } else {
            print!("{}", board.render_text());
        }
    };
    let Some(interval) = args.watch else {
        let now = at.unwrap_or_else(Timestamp::now);
        return match checker.check(now, smoke()).await {
            Ok(board) => {
                print(&board);
                ExitCode::from(board.exit_code())
            }
            Err(e) => {
                eprintln!("cloudmart doctor: {e}");
                ExitCode::from(CLUSTER_UNREADABLE)
            }
        };
    };
    let mut shutdown = std::pin::pin!(cloudmart_http::server::shutdown_signal());
    let mut code = CLUSTER_UNREADABLE;
    loop {
        let result = tokio::select! {
            () = &mut shutdown => break,
            r = checker.check(Timestamp::now(), smoke()) => r,
        };
        if !json {
            // Clear the screen and go home, for a projector.
            print!("\x1b[2J\x1b[H");
        }
        match result {
            Ok(board) => {
                print(&board);
                code = board.exit_code();
            }
            Err(e) => {
                println!("cloudmart doctor: {e}");
                code = CLUSTER_UNREADABLE;
            }
        }
        if !json {
            println!(
                "(checking again every {} s; ctrl-c stops)",
                interval.as_secs()
            );
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    ExitCode::from(code)
}

fn scenario(what: Scenario) -> ExitCode {
    let catalogue = match load_catalogue(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloudmart scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let known = |id: &str| {
        if id == catalogue.scenario {
            Ok(())
        } else {
            Err(format!(
                "no scenario {id:?}; `cloudmart scenario list` shows {:?}",
                catalogue.scenario
            ))
        }
    };
    let result = match what {
        Scenario::List => {
            println!(
                "{}  {} ({} faults)",
                catalogue.scenario,
                catalogue.title,
                catalogue.faults.len()
            );
            Ok(())
        }
        Scenario::Show { id } => known(&id).map(|()| {
            println!("{}: {}", catalogue.scenario, catalogue.title);
            println!("apply: kubectl apply -f {}/", catalogue.manifests);
            println!("faults to find: {}", catalogue.faults.len());
            for f in &catalogue.faults {
                println!(
                    "  {}  ({} hints: cloudmart scenario hint {} {} 1)",
                    f.id,
                    f.hints.len(),
                    catalogue.scenario,
                    f.id
                );
            }
        }),
        Scenario::Hint { id, fault, n } => known(&id).and_then(|()| {
            let f = catalogue
                .fault(&fault)
                .ok_or_else(|| format!("no fault {fault:?} in {id}"))?;
            let hint = n
                .checked_sub(1)
                .and_then(|i| f.hints.get(i))
                .ok_or_else(|| format!("fault {} has hints 1 to {}", f.id, f.hints.len()))?;
            println!("{} hint {n}: {hint}", f.id);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudmart scenario: {e}");
            ExitCode::from(2)
        }
    }
}

fn doctor_diff(left: &std::path::Path, right: &std::path::Path) -> ExitCode {
    let load = |p: &std::path::Path| cloudmart_doctor::model::Manifests::load(p);
    let (l, r) = match (load(left), load(right)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cloudmart doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let changes = cloudmart_doctor::diff::diff(&l, &r);
    for c in &changes {
        let show = |v: &Option<String>| {
            v.as_deref()
                .map_or_else(|| "(absent)".to_owned(), |v| format!("{v:?}"))
        };
        println!(
            "{} {} {}: {} -> {}",
            c.file,
            c.object,
            c.path,
            show(&c.left),
            show(&c.right)
        );
    }
    println!("{} difference(s)", changes.len());
    if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
