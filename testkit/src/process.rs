//! The `scrip` binary as real processes: one-shot commands, and services that are started
//! with their config, awaited until they answer, killed with SIGKILL and restarted.

use scrip_spec::OperatorKey;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `scrip` binary under test. Only the root package's tests know its path, so they make
/// it from `env!("CARGO_BIN_EXE_scrip")`.
#[derive(Debug, Clone, Copy)]
pub struct Scrip(pub &'static str);

impl Scrip {
    /// `scrip ARGS`, not yet run.
    pub fn command(self, args: &[&str]) -> Command {
        let mut command = Command::new(self.0);
        command.args(args);
        command
    }

    /// Runs `scrip ARGS` to completion.
    pub fn run(self, args: &[&str]) -> Output {
        self.command(args).output().expect("scrip runs")
    }

    /// Runs `scrip ARGS` and insists it succeeds; returns its standard output.
    pub fn ok(self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "scrip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `scrip operator keygen` into `dir/NAME.key`.
    pub fn keygen(self, dir: &Path, name: &str) -> OperatorKey {
        let file = dir.join(format!("{name}.key"));
        self.ok(&["operator", "keygen", "--out", path(&file)]);
        OperatorKey::from_text(&std::fs::read_to_string(file).expect("key file")).expect("key")
    }

    /// Makes a ledger on the database `db` with `scrip ledger init` (checking that a second
    /// init is refused), with the operators `issuer` (issuer, redeemer) and `relay`
    /// (redeemer), and writes its config for a free port. Keys and files go in `dir`.
    pub fn ledger_setup(self, dir: &Path, db: &str) -> LedgerSetup {
        let _ledger_key = self.keygen(dir, "ledger");
        let (issuer, relay, genesis) = self.operators(dir, "");
        std::fs::write(dir.join("genesis.toml"), genesis).expect("genesis");
        let port = free_port();
        let (config, _) = self.init_ledger(dir, "ledger", db, port, "");
        LedgerSetup {
            issuer,
            relay,
            config,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The keys of the operators `issuer` (issuer, redeemer) and `relay` (redeemer), made in
    /// `dir`, and the genesis that admits them, with the top-level lines `top` (before the
    /// tables, as TOML needs).
    pub(crate) fn operators(self, dir: &Path, top: &str) -> (OperatorKey, OperatorKey, String) {
        let issuer = self.keygen(dir, "issuer");
        let relay = self.keygen(dir, "relay");
        let genesis = format!(
            "ledger_name = \"test\"\n{top}\
             [[operators]]\nname = \"issuer\"\nid = \"{}\"\nroles = [\"issuer\", \"redeemer\"]\n\
             [[operators]]\nname = \"relay\"\nid = \"{}\"\nroles = [\"redeemer\"]\n",
            issuer.id(),
            relay.id()
        );
        (issuer, relay, genesis)
    }

    /// `scrip ledger init` of `dir/genesis.toml` on `db` with the key `dir/NAME.key` (checking
    /// that a second init is refused), and `dir/NAME.toml` to serve it on `port`, with `extra`
    /// config lines; returns the config file and what the init printed.
    pub(crate) fn init_ledger(
        self,
        dir: &Path,
        name: &str,
        db: &str,
        port: u16,
        extra: &str,
    ) -> (PathBuf, String) {
        let (genesis, key) = (dir.join("genesis.toml"), dir.join(format!("{name}.key")));
        let init = [
            "ledger",
            "init",
            "--genesis",
            path(&genesis),
            "--key",
            path(&key),
            "--database",
            db,
        ];
        let printed = self.ok(&init);
        assert!(
            !self.run(&init).status.success(),
            "a second init must not overwrite the ledger"
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nkey_file = \"{}\"\n{extra}",
                key.display()
            ),
        )
        .expect("config");
        (config, printed)
    }
}

/// A ledger made with `scrip ledger init`: its operators' keys and its config file.
#[derive(Debug)]
pub struct LedgerSetup {
    /// The operator `issuer` (issuer, redeemer); its key file is `issuer.key`.
    pub issuer: OperatorKey,
    /// The operator `relay` (redeemer); its key file is `relay.key`.
    pub relay: OperatorKey,
    /// `ledger.toml`.
    pub config: PathBuf,
    /// The base URL it will serve on.
    pub base: String,
}

/// A service's config file, written for a free port, and the base URL it will serve on.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The TOML file.
    pub config: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl ServiceConfig {
    /// `scrip ROLE serve` with this config, ready when it answers on `/healthz`.
    pub fn process(&self, scrip: Scrip, role: &str) -> Process {
        Process::serve(scrip, role, &self.config, &self.base)
    }
}

impl LedgerSetup {
    /// `scrip ledger serve` with this ledger's config, ready when it answers on `/healthz`.
    pub fn process(&self, scrip: Scrip) -> Process {
        Process::serve(scrip, "ledger", &self.config, &self.base)
    }

    /// Writes `dir/issuer.toml` for the operator `issuer` of this ledger on a free port: its
    /// database `issuer.db`, key file `issuer.key` and token keys `keys/`, all in `dir`.
    pub fn issuer_config(&self, dir: &Path) -> ServiceConfig {
        let keys = format!("keys_dir = \"{}\"\n", dir.join("keys").display());
        self.service_config(dir, "issuer.toml", "issuer", "issuer.db", &keys)
    }

    /// Writes `dir/redeemer.toml` for the operator `relay` of this ledger on a free port: its
    /// database `redeemer.db` and key file `relay.key`, in `dir`.
    pub fn redeemer_config(&self, dir: &Path) -> ServiceConfig {
        self.service_config(dir, "redeemer.toml", "relay", "redeemer.db", "")
    }

    /// Writes `dir/FILE` for the operator `name` (key file `dir/NAME.key`) on a free port,
    /// with its SQLite database `dir/DATABASE`, this ledger, and `extra` lines.
    fn service_config(
        &self,
        dir: &Path,
        file: &str,
        name: &str,
        database: &str,
        extra: &str,
    ) -> ServiceConfig {
        let port = free_port();
        let config = dir.join(file);
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n\
                 database = \"sqlite://{}\"\noperator_key_file = \"{}\"\n{extra}\
                 ledger_url = \"{}\"\n",
                dir.join(database).display(),
                dir.join(format!("{name}.key")).display(),
                self.base
            ),
        )
        .expect("service config");
        ServiceConfig {
            config,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// The arguments of `scrip issuer cards mint --value VALUE --count COUNT --out CSV --config
/// CONFIG`.
pub fn mint_args<'a>(
    value: &'a str,
    count: &'a str,
    csv: &'a Path,
    config: &'a str,
) -> [&'a str; 11] {
    [
        "issuer",
        "cards",
        "mint",
        "--value",
        value,
        "--count",
        count,
        "--out",
        path(csv),
        "--config",
        config,
    ]
}

/// The rows of the printer's CSV that `scrip issuer cards mint` wrote, without the header: the
/// batch first, the card code third.
pub fn read_cards(csv: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(csv)
        .expect("the cards CSV")
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// The path as text (test paths are UTF-8).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A loopback port free at the time of asking, for a config file (a process given port 0
/// would not tell the test which port it took).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    // Below the kernel's ephemeral range (32768 and up), so no outgoing connection takes the
    // port between this check and the bind; never the same port twice in one test process.
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Mutex::default);
    loop {
        let port = 15_000 + (rand::random::<u16>() % 17_000);
        let mut taken = given
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        return port;
    }
}

/// How long a process may take to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `scrip` process that serves something: started, awaited until it answers, killed with
/// SIGKILL or stopped with SIGTERM, and started again with the same arguments. Killed when
/// dropped.
#[derive(Debug)]
pub struct Process {
    scrip: Scrip,
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: Option<PathBuf>,
    ready_url: String,
    ready: fn(u16) -> bool,
    child: Option<Child>,
}

impl Process {
    /// `scrip ROLE serve --config CONFIG`, ready when `BASE/healthz` answers 2xx.
    pub fn serve(scrip: Scrip, role: &str, config: &Path, base: &str) -> Self {
        Self::new(scrip, role, &[role, "serve", "--config", path(config)])
            .ready_when(&format!("{base}/healthz"), |s| (200..300).contains(&s))
    }

    /// `scrip ARGS`, called `name` in messages; give it a readiness check with
    /// [`Process::ready_when`].
    pub fn new(scrip: Scrip, name: &str, args: &[&str]) -> Self {
        Self {
            scrip,
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: Vec::new(),
            log: None,
            ready_url: String::new(),
            ready: |_| true,
            child: None,
        }
    }

    /// Ready once a GET of `url` answers with a status `ready` accepts.
    pub fn ready_when(mut self, url: &str, ready: fn(u16) -> bool) -> Self {
        self.ready_url = url.to_owned();
        self.ready = ready;
        self
    }

    /// Standard output and error are appended to `log` (a restart's after the last run's),
    /// instead of going nowhere.
    pub fn log_to(mut self, log: &Path) -> Self {
        self.log = Some(log.to_owned());
        self
    }

    /// Runs with `key=value` in its environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts it and waits until it answers; returns it.
    pub async fn started(mut self) -> Self {
        self.start().await;
        self
    }

    /// Starts it and waits until it answers; panics (with the end of its log) if it exits or
    /// does not answer in time.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut command = self.scrip.command(&[]);
        command.args(&self.args).stdin(Stdio::null());
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        match &self.log {
            Some(log) => {
                let out = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log file");
                let err = out.try_clone().expect("log file");
                command.stdout(out).stderr(err);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.child = Some(command.spawn().expect("spawn scrip"));
        if self.ready_url.is_empty() {
            return;
        }
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = client.get(&self.ready_url).send().await
                && (self.ready)(r.status().as_u16())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} before answering:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer at {}:\n{}",
                self.name,
                self.ready_url,
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for it to go; nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGKILL if running, then starts it again.
    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    /// SIGTERM, and insists on a clean exit within 20 s (graceful shutdown writes its own log
    /// lines).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "cannot signal {}", self.name);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "{} exited with {status} on SIGTERM:\n{}",
                    self.name,
                    self.log_tail(20)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it was started and not killed or stopped since (it may have exited by itself).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log file, if it has one.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The last `n` lines of its log (empty without one).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
