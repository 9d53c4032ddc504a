//! An issuer, a redeemer sidecar and the example relay, each served in process on the port its
//! config names (port 0 picks a free one) until the test ends.

use scrip_issuer::{Issuer, IssuerConfig};
use scrip_redeemer::example_relay::{self, RelayConfig};
use scrip_redeemer::{Redeemer, RedeemerConfig};
use std::sync::Arc;

/// Binds an `Application` (`$app`, a future), serves it until the test ends, and gives its
/// base URL. (The services' applications share no trait; their methods have the same names.)
macro_rules! serve {
    ($app:expr, $what:literal) => {{
        let app = $app.await.expect(concat!("bind the ", $what));
        let url = format!("http://{}", app.local_addr().expect("addr"));
        tokio::spawn(app.run_until(std::future::pending()));
        url
    }};
}

/// Opens the issuer of `config` and serves it; returns its base URL and the issuer.
pub async fn spawn_issuer(config: IssuerConfig) -> (String, Arc<Issuer>) {
    let issuer = Arc::new(Issuer::open(config).await.expect("open the issuer"));
    let url = serve!(scrip_issuer::Application::new(issuer.clone()), "issuer");
    (url, issuer)
}

/// Starts the redeemer of `config` and serves its sidecar; returns its base URL and the
/// redeemer.
pub async fn spawn_redeemer(config: RedeemerConfig) -> (String, Arc<Redeemer>) {
    let redeemer = Redeemer::start(config).await.expect("start the redeemer");
    let url = serve!(
        scrip_redeemer::Application::new(redeemer.clone()),
        "sidecar"
    );
    (url, redeemer)
}

/// Serves the example relay of `config` on a free loopback port; returns its base URL.
pub async fn spawn_relay(config: RelayConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the relay");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(example_relay::serve(
        listener,
        config,
        std::future::pending(),
    ));
    url
}
