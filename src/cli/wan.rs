//! `wan-emulator`: the test kit's WAN (delay, bandwidth, queue, loss) as a TCP+UDP relay or,
//! with the `wan-tun` feature, between two TUN devices; its stdin commands and its counters.
//! Calls the crate's `testkit::wan` and `config::units`, and `serve::wait_for_signal`.

use crate::error::{Error, Kind};

use super::serve::wait_for_signal;

/// The link the flags describe (the units of the configuration); an error names the flag.
pub(super) fn wan_link(
    delay: &str,
    rate: &str,
    loss: &str,
    queue: &str,
    block_udp: bool,
) -> Result<crate::testkit::wan::Link, String> {
    use crate::config::units::{parse_duration, parse_rate};
    let loss = match loss.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => loss.trim().parse::<f64>(),
    }
    .ok()
    .filter(|l| (0.0..=1.0).contains(l))
    .ok_or_else(|| format!("--loss {loss:?}: a percentage (\"2%\") or a fraction (0.02)"))?;
    Ok(crate::testkit::wan::Link {
        delay: parse_duration(delay).map_err(|e| format!("--delay: {e}"))?,
        rate: parse_rate(rate).map_err(|e| format!("--rate: {e}"))?,
        loss,
        block_udp,
        queue: parse_duration(queue).map_err(|e| format!("--queue: {e}"))?,
    })
}

/// Run the emulator until SIGINT/SIGTERM; print a ready line, then what crossed it. Lines on
/// stdin change it while it runs: `loss 2%`, `block-udp on|off`, `stats`.
pub(super) async fn wan_emulator(
    relay: Option<String>,
    tun: Option<String>,
    link: crate::testkit::wan::Link,
) -> Result<(), Error> {
    use crate::testkit::wan::Relay;
    let usage = |m: &str| Error::internal(Kind::Config, m.to_owned());
    let controls = if let Some(spec) = relay {
        let (listen, target) = spec
            .split_once('=')
            .and_then(|(l, t)| Some((l.parse().ok()?, t.parse().ok()?)))
            .ok_or_else(|| usage("--relay LISTEN=TARGET, both ip:port"))?;
        let relay = Relay::start(listen, target, link)
            .await
            .map_err(|e| Error::io(format!("relay on {listen}"), e))?;
        println!("wan-emulator ready relay={}", relay.addr());
        let controls = relay.controls().clone();
        run_until_signal(&controls).await;
        relay.stop().await;
        controls
    } else if let Some(spec) = tun {
        tun_emulator(&spec, link).await?
    } else {
        return Err(usage("give --relay LISTEN=TARGET or --tun A,B"));
    };
    println!("{}", emulator_stats(&controls));
    Ok(())
}
/// The packet form of the emulator: two TUN devices, every IP packet across the link.
#[cfg(feature = "wan-tun")]
async fn tun_emulator(
    spec: &str,
    link: crate::testkit::wan::Link,
) -> Result<std::sync::Arc<crate::testkit::wan::Controls>, Error> {
    use crate::testkit::wan::Controls;
    use crate::testkit::wan::tun::Tun;
    let usage = |m: &str| Error::internal(Kind::Config, m.to_owned());
    let (a, b) = spec
        .split_once(',')
        .ok_or_else(|| usage("--tun A,B: two device names"))?;
    let open = |name: &str| Tun::open(name).map_err(|e| Error::io(format!("TUN {name}"), e));
    let (a, b) = (open(a)?, open(b)?);
    println!("wan-emulator ready tun={},{}", a.name(), b.name());
    let controls = Controls::new(&link);
    let task = tokio::spawn(crate::testkit::wan::tun::run(a, b, link, controls.clone()));
    run_until_signal(&controls).await;
    task.abort();
    Ok(controls)
}

#[cfg(not(feature = "wan-tun"))]
async fn tun_emulator(
    _spec: &str,
    _link: crate::testkit::wan::Link,
) -> Result<std::sync::Arc<crate::testkit::wan::Controls>, Error> {
    Err(Error::internal(
        Kind::Config,
        "--tun: this build has no TUN support; build with `--features wan-tun`",
    ))
}

/// Obey stdin's commands until SIGINT/SIGTERM (or stdin's end, then only the signal).
async fn run_until_signal(controls: &crate::testkit::wan::Controls) {
    // A thread of its own reads stdin: a read blocked in the runtime's blocking pool would keep
    // the runtime (and so the process) from ending after the signal.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = &mut signal => return,
            line = lines.recv(), if stdin_open => {
                let Some(line) = line else {
                    stdin_open = false;
                    continue;
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["loss", value] => match wan_link("0ms", "unlimited", value, "1ms", false) {
                        Ok(link) => {
                            controls.set_loss(link.loss);
                            println!("ok loss={}", controls.loss());
                        }
                        Err(e) => println!("error {e}"),
                    },
                    ["block-udp", on] => {
                        controls.block_udp(*on == "on");
                        println!("ok block-udp={on}");
                    }
                    ["stats"] => println!("{}", emulator_stats(controls)),
                    _ => println!("error commands: loss X%, block-udp on|off, stats"),
                }
            }
        }
    }
}

fn emulator_stats(controls: &crate::testkit::wan::Controls) -> String {
    let s = &controls.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    format!(
        "wan-emulator stats tcp_connections={} tcp_bytes_up={} tcp_bytes_down={} packets_up={} \
         packets_down={} packet_bytes_up={} packet_bytes_down={} dropped={}",
        get(&s.tcp_connections),
        get(&s.tcp_bytes_up),
        get(&s.tcp_bytes_down),
        get(&s.packets_up),
        get(&s.packets_down),
        get(&s.packet_bytes_up),
        get(&s.packet_bytes_down),
        get(&s.dropped),
    )
}
