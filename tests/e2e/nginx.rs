//! The nginx `auth_request` configuration of spec/INTEGRATION.md section 10, run as written
//! (only its ports replaced) in front of a plain origin: a standard Privacy Pass client pays
//! once and is refused after. Needs nginx (`apt-get install nginx-light`; `.ci/run` installs
//! it).

use crate::private_token::{
    base64_decode, challenged, param_values, serve_origin, tokens_from_the_independent_client,
};
use crate::support::{cards_on_sale, consortium_with_keys};
use privacypass::auth::authenticate::TokenChallenge as PpChallenge;
use privacypass::auth::authorize::build_authorization_header;
use reqwest::StatusCode;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INTEGRATION: &str = include_str!("../../spec/INTEGRATION.md");

/// The nginx block of section 10.
fn documented_block() -> &'static str {
    let section = &INTEGRATION[INTEGRATION.find("## 10. Any origin").expect("section 10")..];
    let start = section.find("```nginx\n").expect("the nginx block") + "```nginx\n".len();
    let end = section[start..].find("```").expect("its end");
    &section[start..start + end]
}

/// nginx serving `block` on `port`, with every file under `dir`.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, port: u16, block: &str) -> Self {
        let d = dir.display();
        let conf = format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port};\n{block}\n  }}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).expect("nginx.conf");
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let program = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nginx");
        let child = Command::new(program)
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &file.display().to_string(),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (apt-get install nginx-light)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The documented block in front of a plain origin that knows nothing of tokens, checked at
/// the sidecar `sidecar_url`; the URL of a paid download. nginx's files are in `dir/nginx`.
async fn nginx_before_an_origin(dir: &Path, sidecar_url: &str) -> (Nginx, String) {
    let origin = axum::Router::new().route(
        "/downloads/{name}",
        axum::routing::get(|| async { "the paid bytes" }),
    );
    let backend = serve_origin(origin).await;
    let port = scrip_testkit::free_port();
    let block = documented_block()
        .replace("http://127.0.0.1:7600", sidecar_url)
        .replace("http://127.0.0.1:8080", &backend);
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("dir");
    let nginx = Nginx::start(&nginx_dir, port, &block);
    (nginx, format!("http://127.0.0.1:{port}/downloads/file.bin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nginx (apt-get install nginx-light); CI runs it with --ignored"]
async fn the_documented_nginx_auth_request_charges_one_token_per_request() {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    let (_nginx, url) = nginx_before_an_origin(dir.path(), &a.redeemer_url).await;
    let http = reqwest::Client::new();

    // nginx passes the sidecar's challenges on.
    let header = challenged(&http.get(&url).send().await.expect("answer"));
    let challenges = param_values(&header, "challenge");
    let keys = param_values(&header, "token-key");
    assert!(!challenges.is_empty() && challenges.len() == keys.len());
    let challenge = PpChallenge::from_base64(&challenges[0]).expect("decodes");
    let card = cards_on_sale(a, 100, 1).await.remove(0);
    let tokens = tokens_from_the_independent_client(
        &a.issuer_url,
        &card,
        &challenge,
        &base64_decode(&keys[0]),
        1,
    )
    .await;
    let (name, value) = build_authorization_header(&tokens[0]).expect("header");

    let paid = http
        .get(&url)
        .header(name.clone(), value.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.text().await.expect("body"), "the paid bytes");
    let again = http
        .get(&url)
        .header(name, value)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "one token, one request"
    );
    assert!(
        again.headers().get("www-authenticate").is_some(),
        "a fresh challenge"
    );
    assert_eq!(scrip_testkit::spent_total(&c.ledger_url).await, 1);
}

/// A consortium of three members, each with the three live keys of a kind the ledger allows
/// (a rotation a week and tokens redeemable for weeks keep several): the sidecar's 401 carries
/// nine challenges, over 4 KiB of `WWW-Authenticate`, and the documented block still passes
/// them on and takes a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nginx (apt-get install nginx-light); CI runs it with --ignored"]
async fn the_documented_nginx_block_passes_the_challenges_of_a_consortium_on() {
    let (dir, c) = consortium_with_keys(&["op-a", "op-b", "op-c"]).await;
    for op in &c.operators {
        for _ in 0..2 {
            op.issuer
                .rotate_keys()
                .await
                .expect("another key of each kind");
        }
    }
    let a = &c.operators[0];
    let (_nginx, url) = nginx_before_an_origin(dir.path(), &a.redeemer_url).await;
    let nginx_dir = dir.path().join("nginx");
    let http = reqwest::Client::new();

    let asked = http.get(&url).send().await.expect("answer");
    assert_eq!(
        asked.status(),
        StatusCode::UNAUTHORIZED,
        "nginx: {}",
        std::fs::read_to_string(nginx_dir.join("error.log")).unwrap_or_default()
    );
    let header = challenged(&asked);
    let challenges = param_values(&header, "challenge");
    assert_eq!(challenges.len(), 9, "three keys of each of three issuers");
    assert!(header.len() > 4096, "{} bytes", header.len());
    let keys = param_values(&header, "token-key");
    let challenge = PpChallenge::from_base64(&challenges[0]).expect("decodes");
    let issuer = challenge.issuer_name();
    let op = c
        .operators
        .iter()
        .find(|o| o.name == issuer)
        .expect("a member's challenge");
    let card = cards_on_sale(op, 100, 1).await.remove(0);
    let tokens = tokens_from_the_independent_client(
        &op.issuer_url,
        &card,
        &challenge,
        &base64_decode(&keys[0]),
        1,
    )
    .await;
    let (name, value) = build_authorization_header(&tokens[0]).expect("header");
    let paid = http
        .get(&url)
        .header(name, value)
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.text().await.expect("body"), "the paid bytes");
}
