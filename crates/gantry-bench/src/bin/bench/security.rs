//! `bench --only security`: what access control and mutual TLS cost (issue
//! 15). The store part's write and fan-out rows against three fresh Gantry
//! servers on the embedded store, each in a process of its own: ACLs off
//! (the baseline), ACLs on (every request carries the bootstrap token), and
//! ACLs on with mutual TLS (`--verify-incoming`: the load generator presents
//! a client certificate; HTTP/1.1 or HTTP/2 by ALPN); and etcd direct
//! without and with TLS and client certificates (two fresh etcds). Each row
//! is printed with its ratio to the same kind of server without them.
//!
//! A shared 2-core machine's load comes and goes within seconds, so rows
//! measured one after the other compare moments, not servers: every
//! measurement is cut into [`PASSES`] passes, run in turn with the other
//! rows' of its table.

use gantry_store::local_etcd::{LocalEtcdOptions, LocalEtcdTls};
use gantry_tls::{Ca, CertRequest, Issued, Role};

use super::*;

/// How many passes each row's measurement is cut into.
const PASSES: usize = 4;
/// The pause before each pass, for the previous one's lingering work
/// (etcd commits its backend every 100 ms) to end.
const SETTLE: Duration = Duration::from_millis(200);

/// The security tables: writes, fan-out, then the targets read off them.
pub(super) async fn rows(options: &Options, dir: &Path) -> anyhow::Result<()> {
    let tls_dir = dir.join("tls");
    let certificates = Certificates::create(&tls_dir)?;
    let data = |name: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let token = |dir: &str| -> anyhow::Result<String> {
        let path = Path::new(dir).join(gantry_server::BOOTSTRAP_TOKEN_FILE);
        let secret = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(secret.trim().to_string())
    };
    let (off_dir, acl_dir, mtls_dir) = (data("acl-off")?, data("acl-on")?, data("acl-mtls")?);
    let tls_arg = tls_dir.to_string_lossy();
    let off = ServerProcess::start(&["embedded", &off_dir])?;
    let acl = ServerProcess::start(&["embedded", &acl_dir, "--acl", &acl_dir])?;
    let mtls = ServerProcess::start(&["embedded", &mtls_dir, "--acl", &mtls_dir, "--tls", &tls_arg])?;
    let servers = [
        (Endpoint::plain(&off.url), off.pid()),
        (Endpoint { token: Some(token(&acl_dir)?), ..Endpoint::plain(&acl.url) }, acl.pid()),
        (
            Endpoint { token: Some(token(&mtls_dir)?), ..Endpoint::plain(&mtls.url) }
                .with_tls(certificates.client_tls()?)?,
            mtls.pid(),
        ),
    ];
    // One watch on each server, of a prefix nothing is written to, as a
    // server with agents always has. Without it the ACLs-off server (the
    // only one then whose store wakes no task on a commit: the others'
    // ACLs follow the store) wrote at 1 client at a third of the rate
    // (debug build: 400-480/s against 1,420/s with the watch), and the
    // rows compared idle wake-ups rather than access control.
    let mut idle = Vec::with_capacity(servers.len());
    for (server, _) in &servers {
        idle.push(sse_watchers(server, "idle/", 1).await?);
    }
    let etcd_plain = LocalEtcd::start().await.context("starting etcd (apt-get install etcd-server)")?;
    let etcd_tls = LocalEtcd::start_with(LocalEtcdOptions { tls: Some(certificates.etcd()), root_password: None })
        .await
        .context("starting etcd with TLS")?;
    let direct_plain = etcd_client::Client::connect([etcd_plain.endpoint()], None).await?;
    let direct_tls =
        etcd_client::Client::connect([etcd_tls.endpoint()], Some(certificates.etcd_client_options())).await?;
    println!();
    println!(
        "security: gantry servers (embedded store, fresh): ACLs off {} | ACLs on {} | ACLs on + mutual TLS {}",
        off.url, acl.url, mtls.url
    );
    println!("etcd {} | etcd with TLS + client certificates {}", etcd_plain.endpoint(), etcd_tls.endpoint());
    println!();

    let etcds = [(&direct_plain, etcd_plain.pid()), (&direct_tls, etcd_tls.pid())];
    let writes = write_rows(options, &servers, &etcds).await?;
    println!();
    let fan_out = fan_out_rows(options, &servers).await?;
    println!();
    println!("vs off: writes/s (higher is better) or fan-out p99 (lower is better) against the same kind of server");
    println!("without ACLs and TLS (Gantry's first row, etcd's plain row), measured in turn with them: each row's");
    println!(
        "{} s (or {} rounds) run as {PASSES} passes alternating with the other rows'. ACLs on: every request carries",
        options.seconds, options.rounds
    );
    println!(
        "the bootstrap (management) token; mTLS: a client certificate of the server's CA, checked at the handshake;"
    );
    println!("connections are opened (and handshaken) before the timing starts and kept alive.");
    println!();
    print_targets(&writes, &fan_out);
    drop((idle, off, acl, mtls, etcd_plain, etcd_tls));
    Ok(())
}

/// Gantry's three servers' rows' names, in the order of `servers`.
const WRITE_ROWS: [&str; 3] =
    ["gantry, ACLs off (HTTP)", "gantry, ACLs on (HTTP, token)", "gantry, ACLs on + mTLS (HTTPS)"];

/// 64-client results the targets are read from: Gantry's servers' then etcd's
/// (plain, TLS) writes.
struct WriteRatios {
    gantry: Vec<Measured>,
    etcd: Vec<Measured>,
}

/// Durable writes with 1 and 64 clients; returns the 64-client results.
async fn write_rows(
    options: &Options,
    servers: &[(Endpoint, u32); 3],
    etcds: &[(&etcd_client::Client, u32); 2],
) -> anyhow::Result<WriteRatios> {
    let slice = Duration::from_secs_f64(options.seconds) / PASSES as u32;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    print_writes_header("security: durable writes", "vs off");
    let mut last = None;
    for clients in [1usize, 64] {
        // Gantry's rows and etcd's are interleaved among themselves: each
        // is compared with its own kind only.
        let mut rows = Vec::new();
        for (server, pid) in servers {
            rows.push(([*pid], http_put(server, "sec", clients, &value).await?));
        }
        let results = interleaved_writes(clients, slice, &rows).await?;
        let rows: Vec<_> = etcds.iter().map(|(direct, pid)| ([*pid], etcd_put(direct, &value))).collect();
        let etcd = interleaved_writes(clients, slice, &rows).await?;
        for (name, m) in WRITE_ROWS.iter().zip(&results) {
            print_writes(name, clients, m, Some(m.per_second / results[0].per_second));
        }
        for (name, m) in ["etcd direct (gRPC)", "etcd direct, TLS + client certs"].iter().zip(&etcd) {
            print_writes(name, clients, m, Some(m.per_second / etcd[0].per_second));
        }
        last = Some(WriteRatios { gantry: results, etcd });
    }
    last.context("no clients")
}

/// `clients` writing to each row's server, `slice` a pass: the rows' results.
async fn interleaved_writes(clients: usize, slice: Duration, rows: &[([u32; 1], Op)]) -> anyhow::Result<Vec<Measured>> {
    // Untimed: a fresh server's first writes (its file growing, its caches
    // cold) would fall on whichever row went first.
    for (serving, op) in rows {
        sample(clients, slice / 2, serving, op, PASSES as u64 * MAX_OPS).await?;
    }
    let results = interleaved(rows.len(), async |row, pass| {
        let (serving, op) = &rows[row];
        sample(clients, slice, serving, op, pass as u64 * MAX_OPS).await
    })
    .await?;
    Ok(results.into_iter().map(Samples::summary).collect())
}

/// 1,000 watchers (by default) of one prefix on each server, on a
/// connection each and as streams of [`MUX_CONNECTIONS`]; returns the
/// p99 ratios to ACLs off, as the targets' summary says them.
async fn fan_out_rows(options: &Options, servers: &[(Endpoint, u32); 3]) -> anyhow::Result<Vec<String>> {
    let prefix = format!("fan-security/{}/", std::process::id());
    print_fan_out_header("security: watch fan-out", "vs off");
    let mut ratios = Vec::new();
    for multiplexed in [false, true] {
        let (connections, kind, said) = if multiplexed {
            (MUX_CONNECTIONS, "HTTP/2 SSE", "multiplexed")
        } else {
            (options.watchers, "SSE", "a connection each")
        };
        let mut watchers = Vec::with_capacity(servers.len());
        for (server, _) in servers {
            watchers.push(match multiplexed {
                true => http2_watchers(server, &prefix, options.watchers, connections).await?,
                false => sse_watchers(server, &prefix, options.watchers).await?,
            });
        }
        let times = interleaved(servers.len(), async |row, number| {
            let (server, pid) = &servers[row];
            let pass = Pass { number, rounds: share(options.rounds, number) };
            write_rounds(server, &prefix, options, pass, &[*pid], &mut watchers[row]).await
        })
        .await?;
        drop(watchers);
        let names = [
            format!("gantry, ACLs off ({kind})"),
            format!("gantry, ACLs on ({kind})"),
            format!("gantry, ACLs on + mTLS ({kind})"),
        ];
        let rows: Vec<(&str, usize, FanOut)> =
            names.iter().zip(times).map(|(name, times)| (name.as_str(), connections, times.summary())).collect();
        let reference = rows[0].2.p99;
        print_fan_out(options, &rows, reference);
        let ratio = |m: &FanOut| m.p99.as_secs_f64() / reference.as_secs_f64().max(f64::EPSILON);
        ratios.push(format!("{said}: ACLs on {:.2}x, + mTLS {:.2}x", ratio(&rows[1].2), ratio(&rows[2].2)));
    }
    Ok(ratios)
}

/// Issue 15's targets, read off the 64-client writes.
fn print_targets(writes: &WriteRatios, fan_out: &[String]) {
    let change = |now: f64, before: f64| format!("{:+.1}%", (now / before.max(f64::EPSILON) - 1.0) * 100.0);
    let row = |label: &str, m: &Measured, base: &Measured, target: String| {
        let cpu = match (m.serving_cpu, base.serving_cpu) {
            (Some(m), Some(base)) => change(m.as_secs_f64(), base.as_secs_f64()),
            _ => "-".to_string(),
        };
        let line = format!("{label:<36} {:>9} {:>10}   {target}", change(m.per_second, base.per_second), cpu);
        println!("{}", line.trim_end());
    };
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let cost = |m: &Measured, base: &Measured| 1.0 - m.per_second / base.per_second;
    let (g, e) = (&writes.gantry, &writes.etcd);
    let (acl, mtls, etcd_tls) = (cost(&g[1], &g[0]), cost(&g[2], &g[0]), cost(&e[1], &e[0]));
    println!("{:<36} {:>9} {:>10}   target", "64 clients: change against without", "writes/s", "CPU/write");
    row("gantry, ACLs on", &g[1], &g[0], format!("ACLs cost at most 5%: {}", met(acl <= 0.05)));
    row("gantry, ACLs on + mTLS", &g[2], &g[0], format!("mTLS at most 20%: {}", met(mtls <= 0.20)));
    row("etcd, TLS + client certs", &e[1], &e[0], format!("gantry's mTLS no worse: {}", met(mtls <= etcd_tls)));
    row("(gantry, mTLS against ACLs on)", &g[2], &g[1], String::new());
    println!("fan-out p99 against ACLs off: {}", fan_out.join("; "));
}

/// Runs `pass(row, number)` for every row, [`PASSES`] times; one merged
/// result per row.
async fn interleaved<T: Merge>(
    rows: usize,
    mut pass: impl AsyncFnMut(usize, usize) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut merged: Vec<Option<T>> = std::iter::repeat_with(|| None).take(rows).collect();
    for number in 0..PASSES {
        // Each pass starts one row further on, and every other round of
        // passes goes backwards, so no row always follows the same one (a
        // server's work left over, such as etcd's backend commit after its
        // last write, falls on the next row).
        let mut order: Vec<usize> = (0..rows).map(|turn| (number + turn) % rows).collect();
        if (number / rows.max(1)) % 2 == 1 {
            order.reverse();
        }
        for row in order {
            tokio::time::sleep(SETTLE).await;
            let result = pass(row, number).await?;
            match &mut merged[row] {
                Some(earlier) => earlier.merge(result),
                slot => *slot = Some(result),
            }
        }
    }
    Ok(merged.into_iter().flatten().collect())
}

/// Pass `number`'s part of `total` rounds (the parts add up to `total`).
fn share(total: usize, number: usize) -> usize {
    total * (number + 1) / PASSES - total * number / PASSES
}

/// A pass's raw results, added to the same row's earlier passes'.
trait Merge {
    fn merge(&mut self, later: Self);
}

fn add(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a? + b?)
}

impl Merge for Samples {
    fn merge(&mut self, later: Samples) {
        self.latencies.extend(later.latencies);
        self.elapsed += later.elapsed;
        self.serving_cpu = add(self.serving_cpu, later.serving_cpu);
    }
}

impl Merge for RoundTimes {
    fn merge(&mut self, later: RoundTimes) {
        self.times.extend(later.times);
        self.serving_cpu = add(self.serving_cpu, later.serving_cpu);
        self.watchers_cpu += later.watchers_cpu;
    }
}

/// The bench's CA and what it signed: a server certificate (Gantry's and
/// etcd's: it names 127.0.0.1) and the load generator's client certificate.
struct Certificates {
    ca: Ca,
    server: Issued,
    client: Issued,
}

impl Certificates {
    /// A new CA and certificates; the CA's certificate and the server's
    /// certificate and key go to `dir` for the servers' processes.
    fn create(dir: &Path) -> anyhow::Result<Certificates> {
        let ca = Ca::create("bench", gantry_tls::CA_VALIDITY)?;
        let server = ca.issue(&CertRequest::new(Role::Server, "bench-server"))?;
        let client = ca.issue(&CertRequest::new(Role::Client, "bench"))?;
        std::fs::create_dir_all(dir)?;
        gantry_tls::write_public(&dir.join(gantry_tls::CA_FILE), ca.cert_pem().as_bytes())?;
        gantry_tls::write_public(&dir.join(SERVER_CERT_FILE), server.cert_pem.as_bytes())?;
        gantry_tls::write_private(&dir.join(SERVER_KEY_FILE), server.key_pem.as_bytes())?;
        Ok(Certificates { ca, server, client })
    }

    /// The load generator's TLS with Gantry: the CA, the client certificate.
    fn client_tls(&self) -> anyhow::Result<ClientTls> {
        Ok(ClientTls {
            ca: TrustedCa::from_pem(self.ca.cert_pem(), "the bench's CA")?,
            identity: Some(Identity::from_pem(&self.client.cert_pem, &self.client.key_pem, "the bench's client")?),
        })
    }

    /// etcd's TLS: the server certificate, client certificates of the CA required.
    fn etcd(&self) -> LocalEtcdTls {
        LocalEtcdTls {
            ca_pem: self.ca.cert_pem().to_owned(),
            server_cert_pem: self.server.cert_pem.clone(),
            server_key_pem: self.server.key_pem.clone(),
            client_cert_pem: self.client.cert_pem.clone(),
            client_key_pem: self.client.key_pem.clone(),
        }
    }

    /// etcd-client's options for that etcd: trust the CA, present the client certificate.
    fn etcd_client_options(&self) -> etcd_client::ConnectOptions {
        etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(self.ca.cert_pem()))
                .identity(etcd_client::Identity::from_pem(&self.client.cert_pem, &self.client.key_pem)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows in the order a pass ran them.
    struct Turns(Vec<(usize, usize)>);

    impl Merge for Turns {
        fn merge(&mut self, later: Turns) {
            self.0.extend(later.0);
        }
    }

    #[test]
    fn the_passes_share_out_every_round() {
        for total in [0, 1, 3, 4, 5, 200, 201] {
            let shares: Vec<usize> = (0..PASSES).map(|number| share(total, number)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{total}: {shares:?}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1, "{total}: {shares:?}");
        }
    }

    #[test]
    fn every_row_runs_every_pass_and_follows_more_than_one_row() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        for rows in [2, 3] {
            let mut order = Vec::new();
            let merged = runtime
                .block_on(interleaved(rows, async |row, number| {
                    order.push(row);
                    Ok(Turns(vec![(row, number)]))
                }))
                .unwrap();
            // One result per row, in the rows' order, holding all its passes.
            for (row, turns) in merged.iter().enumerate() {
                let expected: Vec<(usize, usize)> = (0..PASSES).map(|number| (row, number)).collect();
                assert_eq!(turns.0, expected, "{rows} rows");
            }
            // What ran just before each row (across passes) was not always the same row.
            for row in 0..rows {
                let before: std::collections::BTreeSet<usize> =
                    order.windows(2).filter(|w| w[1] == row).map(|w| w[0]).collect();
                assert!(before.len() > 1, "{rows} rows: {order:?}");
            }
        }
    }
}
