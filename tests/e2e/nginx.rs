//! The nginx `auth_request` configuration of spec/INTEGRATION.md section 10, run as written
//! (only its ports replaced) in front of a plain origin: a standard Privacy Pass client pays
//! once and is refused after. Needs nginx (`apt-get install nginx-light`; `.ci/run` installs
//! it).

use crate::private_token::{
    base64_decode, challenged, param_values, tokens_from_the_independent_client,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nginx (apt-get install nginx-light); CI runs it with --ignored"]
async fn the_documented_nginx_auth_request_charges_one_token_per_request() {
    let (dir, c) = consortium_with_keys(&["op-a"]).await;
    let a = &c.operators[0];
    // The origin behind nginx knows nothing of tokens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = format!("http://{}", listener.local_addr().expect("addr"));
    let origin = axum::Router::new().route(
        "/downloads/{name}",
        axum::routing::get(|| async { "the paid bytes" }),
    );
    tokio::spawn(async move { axum::serve(listener, origin).await });
    let port = scrip_testkit::free_port();
    let block = documented_block()
        .replace("http://127.0.0.1:7600", &a.redeemer_url)
        .replace("http://127.0.0.1:8080", &backend);
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("dir");
    let _nginx = Nginx::start(&nginx_dir, port, &block);
    let url = format!("http://127.0.0.1:{port}/downloads/file.bin");
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
