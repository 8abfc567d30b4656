//! The `framecast` binary: command line, logging, Ctrl-C, and dispatch to the library.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use framecast::cli::{Cli, Cmd, DemoArgs, TestHooks, TransportArg};
use framecast::receiver::{self, RecvConfig};
use framecast::sender::{self, SendConfig};
use framecast::stage;
use framecast::stats::StatsConfig;
use framecast::view::{display_available, FrameSink, Headless, WindowSink};

fn main() -> ExitCode {
    let cli = match framecast::config::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(framecast::config::ArgsError::Clap(e)) => e.exit(),
        Err(framecast::config::ArgsError::Config(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_thread_names(true)
        .with_target(false)
        .init();
}

/// Ctrl-C sets the flag that capture (and the viewer) check; a second Ctrl-C exits at once.
fn install_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        info!("stopping (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Test hooks are read here, once, before any thread starts; nothing else reads them.
    let hooks = TestHooks::from_env()?;
    hooks.install()?;
    match cli.cmd {
        Cmd::Send(args) => {
            let (cfg, source) = args.into_config(&hooks)?;
            let stop = install_ctrl_c()?;
            sender::run(cfg, source, stop)?;
        }
        Cmd::Recv(args) => {
            let headless = args.headless;
            let cfg = args.into_config()?;
            let mut sink: Box<dyn FrameSink> = if headless { Box::new(Headless) } else { Box::new(WindowSink::new()?) };
            let stop = install_ctrl_c()?;
            receiver::run(cfg, sink.as_mut(), stop)?;
        }
        Cmd::Demo(args) => demo(args, &hooks)?,
        Cmd::Cameras => cameras()?,
        Cmd::Netsim(args) => framecast::netsim::run(args.into_config()?)?,
        Cmd::Keygen(args) => {
            framecast::net::secure::Key::write_new(&args.path)?;
            info!(path = %args.path.display(), "wrote a new key (mode 0600); give both ends --key-file with a copy of it");
        }
        Cmd::Report(args) => {
            use std::io::Write;
            let runs = framecast::report::load(&args.logs)?;
            write!(std::io::stdout().lock(), "{}", framecast::report::table(&runs))?;
            if let Some(out) = &args.svg {
                framecast::report::svg(&runs, out)?;
                info!(path = %out.display(), "plot written");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's two ends on 127.0.0.1: the receiver listens on a free port, the sender calls it.
fn demo_endpoints(transport: TransportArg) -> anyhow::Result<(sender::Endpoint, receiver::Endpoint)> {
    if transport == TransportArg::Udp {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot bind a udp socket on 127.0.0.1")?;
        let to = format!("127.0.0.1:{}", socket.local_addr()?.port());
        return Ok((
            sender::Endpoint::Udp(sender::udp::UdpEndpoint::Connect(to), sender::udp::UdpOptions::default()),
            receiver::Endpoint::Udp(receiver::UdpEndpoint::Listen(socket), receiver::UdpRecvOptions::default()),
        ));
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    Ok((sender::Endpoint::Connect(format!("127.0.0.1:{port}")), receiver::Endpoint::Listen(listener)))
}

fn demo(args: DemoArgs, hooks: &TestHooks) -> anyhow::Result<()> {
    let (source, subsampling, reencode_jpeg) = args.source.validate(hooks.source_fault)?;
    let (send_json, recv_json) = args.stats_logs();
    let (congestion, control) = args.link.validate(args.source.fps)?;
    let reencode_jpeg = reencode_jpeg || control.is_some();
    let key = args.key.load()?;
    let mut sink: Box<dyn FrameSink> = if args.headless {
        Box::new(Headless)
    } else if !display_available() {
        warn!("no display found (DISPLAY is not set): running headless; stats are still printed");
        Box::new(Headless)
    } else {
        Box::new(WindowSink::new()?)
    };
    let (send_endpoint, recv_endpoint) = demo_endpoints(args.transport)?;
    let stop = install_ctrl_c()?;
    let send_cfg = SendConfig {
        endpoint: send_endpoint,
        fps: args.source.fps,
        quality: args.source.quality.unwrap_or(75),
        subsampling,
        reencode_jpeg,
        frames: args.frames,
        duration: args.duration,
        stats: StatsConfig { json: send_json, enabled: !args.no_stats, ..StatsConfig::default() },
        connect_patience: std::time::Duration::from_secs(5),
        once: true,
        http: None,
        publish: None,
        rtsp: None,
        restart_rows: 0,
        congestion,
        control,
        key: key.clone(),
        fast_dct: args.source.fast_dct,
        encode_threads: args.source.encode_threads,
    };
    let recv_cfg = RecvConfig {
        endpoint: recv_endpoint,
        frames: None,
        duration: None,
        stats: StatsConfig { json: recv_json, enabled: !args.no_stats, ..StatsConfig::default() },
        once: true,
        dump: None,
        connect_patience: std::time::Duration::from_secs(5),
        quality: None,
        frame_log: None,
        key,
        decode_speed: args.decode.into(),
        decode_threads: args.decode.decode_threads,
    };
    let sender = {
        let stop = stop.clone();
        stage::spawn("sender", move || sender::run(send_cfg, source, stop))?
    };
    let recv_result = receiver::run(recv_cfg, sink.as_mut(), stop.clone());
    // The viewer may end first (window closed): stop the sender too.
    stop.store(true, Ordering::SeqCst);
    stage::join(sender, "sender").context("sender")?;
    recv_result.context("receiver")?;
    Ok(())
}

fn cameras() -> anyhow::Result<()> {
    use std::io::Write;
    let list = match framecast::capture::camera::list() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot query cameras");
            Vec::new()
        }
    };
    let mut out = std::io::stdout().lock();
    if list.is_empty() {
        writeln!(out, "no cameras found")?;
        return Ok(());
    }
    for cam in list {
        writeln!(out, "camera:{}  {}", cam.index, cam.name)?;
        if cam.formats.is_empty() {
            writeln!(out, "    (formats unavailable)")?;
        }
        for f in cam.formats {
            writeln!(out, "    {f}")?;
        }
    }
    Ok(())
}
