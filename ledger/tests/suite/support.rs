//! Fixtures: a fresh ledger on a fresh database, with two member operators and a token key.

use scrip_ledger::Ledger;
use scrip_ledger::local::member;
use scrip_spec::ledger::{Action, Approval, Change, LedgerRequest, Proposal, Role};
use scrip_spec::now;
use scrip_spec::{
    CapacityKind, OperatorKey, Signed, Token, TokenKeyInfo, TokenSecretKey, UnixSeconds,
};
use scrip_testkit::TestDb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub struct Fixture {
    pub ledger: Arc<Ledger>,
    /// Seconds added to the system clock, for the ledger and for requests.
    pub skew: Arc<AtomicU64>,
    pub url: String,
    pub ledger_key_seed: [u8; 32],
    pub a: OperatorKey,
    pub b: OperatorKey,
    pub outsider: OperatorKey,
    pub _db: TestDb,
}

/// RSA key generation takes a while; the tests share a few keys.
pub fn rsa_key(i: usize) -> &'static TokenSecretKey {
    static KEYS: OnceLock<Vec<TokenSecretKey>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..5)
            .map(|_| TokenSecretKey::generate().expect("keygen"))
            .collect()
    })[i]
}

impl Fixture {
    pub async fn sqlite() -> Self {
        Self::new(TestDb::sqlite()).await
    }

    pub async fn postgres() -> Self {
        Self::new(TestDb::postgres().await).await
    }

    async fn new(db: TestDb) -> Self {
        let ledger_key = OperatorKey::generate();
        let ledger_key_seed = *ledger_key.seed();
        let (a, b, outsider) = (
            OperatorKey::generate(),
            OperatorKey::generate(),
            OperatorKey::generate(),
        );
        let operators = vec![
            member("op-a", &a, &[Role::Issuer, Role::Redeemer, Role::Admin]),
            member("op-b", &b, &[Role::Issuer, Role::Redeemer]),
        ];
        let skew = Arc::new(AtomicU64::new(0));
        let clock_skew = skew.clone();
        let ledger = scrip_ledger::local::init(&db.url, ledger_key, "test ledger", operators)
            .await
            .expect("genesis")
            .with_clock(Arc::new(move || now() + clock_skew.load(Ordering::SeqCst)));
        Self {
            ledger: Arc::new(ledger),
            skew,
            url: db.url.clone(),
            ledger_key_seed,
            a,
            b,
            outsider,
            _db: db,
        }
    }

    pub async fn request(&self, by: &OperatorKey, action: Action) -> Signed<LedgerRequest> {
        let id = self.ledger.info().await.ledger_id;
        by.sign(LedgerRequest::new(id, self.now(), action))
    }

    /// A governance change approved by `admins`, submitted by the first of them.
    pub async fn govern(&self, admins: &[&OperatorKey], change: Change) -> Signed<LedgerRequest> {
        let info = self.ledger.info().await;
        let proposal = Proposal {
            ledger_id: info.ledger_id,
            governance_seq: info.governance_seq,
            change,
        };
        let approvals = admins
            .iter()
            .map(|admin| Approval::sign(admin, &proposal))
            .collect();
        self.request(
            admins[0],
            Action::Govern {
                proposal,
                approvals,
            },
        )
        .await
    }

    /// The fixture's time: the system clock plus the skew.
    pub fn now(&self) -> UnixSeconds {
        now() + self.skew.load(Ordering::SeqCst)
    }

    /// Moves the ledger's (and the requests') clock forward.
    pub fn advance(&self, seconds: u64) {
        self.skew.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Announces RSA key `i` for `kind` by `by` (named `issuer`), valid for a day.
    pub async fn announce(
        &self,
        by: &OperatorKey,
        issuer: &str,
        i: usize,
        kind: &str,
    ) -> TokenKeyInfo {
        let t = now();
        let info = key_info(
            i,
            issuer,
            kind,
            t - 10,
            t + 3600,
            t + 86_400,
            t + 2 * 86_400,
        );
        let req = self
            .request(by, Action::AnnounceKey { key: info.clone() })
            .await;
        self.ledger.submit(req).await.expect("announce key");
        info
    }
}

pub fn key_info(
    i: usize,
    issuer: &str,
    kind: &str,
    valid_from: UnixSeconds,
    issue_until: UnixSeconds,
    redeem_until: UnixSeconds,
    forget_after: UnixSeconds,
) -> TokenKeyInfo {
    TokenKeyInfo {
        public_key: rsa_key(i).public_key().clone(),
        issuer: issuer.into(),
        kind: CapacityKind::new(kind).expect("kind"),
        valid_from,
        issue_until,
        redeem_until,
        forget_after,
    }
}

pub fn random_nullifier() -> scrip_spec::Nullifier {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    scrip_spec::Nullifier(b)
}

/// `n` valid tokens of RSA key `i` for `issuer`.
pub fn tokens(i: usize, issuer: &str, n: usize) -> Vec<Token> {
    scrip_testkit::mint_tokens(rsa_key(i), issuer, n)
}

/// A spend of `tokens`.
pub fn spend(tokens: Vec<Token>) -> Action {
    Action::spend_of(tokens)
}

impl Fixture {
    /// Runs `sql` (with one `$1` parameter if `bind` is given) on the ledger's database behind
    /// the ledger's back, as someone with access to the database could; returns the rows it
    /// changed.
    pub async fn tamper(&self, sql: &str, bind: Option<&[u8]>) -> u64 {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.expect("sqlite");
            let query = sqlx::query(sql);
            let query = match bind {
                Some(b) => query.bind(b),
                None => query,
            };
            query.execute(&pool).await.expect("tamper").rows_affected()
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("postgres");
            let query = sqlx::query(sql);
            let query = match bind {
                Some(b) => query.bind(b),
                None => query,
            };
            query.execute(&pool).await.expect("tamper").rows_affected()
        }
    }

    /// Opens the ledger on its database again, as a restart does.
    pub async fn reopen(&self) -> Result<Ledger, scrip_ledger::LedgerError> {
        let store = scrip_ledger::connect(&self.url).await.expect("reopen");
        Ledger::open(store, OperatorKey::from_seed(&self.ledger_key_seed)).await
    }
}
