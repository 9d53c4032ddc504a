//! Fresh databases: each test gets its own SQLite file or PostgreSQL schema, so tests run in
//! parallel and never see each other's rows.

use anyhow::Context as _;

/// The environment variable naming the PostgreSQL server the tests may create schemas in.
pub const PG_URL_VAR: &str = "SCRIP_TEST_PG_URL";

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in the PostgreSQL at `SCRIP_TEST_PG_URL`.
    Postgres,
}

impl Backend {
    /// The backends available here: SQLite always, PostgreSQL when `SCRIP_TEST_PG_URL` is set.
    pub fn available() -> Vec<Backend> {
        let mut v = vec![Backend::Sqlite];
        if std::env::var(PG_URL_VAR).is_ok() {
            v.push(Backend::Postgres);
        }
        v
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh, empty database and what keeps it alive.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL (`sqlite://…`, or `postgres://…` with the schema on the search path).
    pub url: String,
    /// The temporary directory holding the SQLite file.
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema.
    pub schema: Option<PgSchema>,
}

impl TestDb {
    /// A SQLite file `ledger.db` in a temporary directory of its own.
    pub fn sqlite() -> Self {
        Self::try_sqlite().expect("a temporary directory")
    }

    /// A schema `scrip_test_…` of its own in the PostgreSQL at `SCRIP_TEST_PG_URL` (panics
    /// without it: such tests are `#[ignore = "needs SCRIP_TEST_PG_URL"]`).
    pub async fn postgres() -> Self {
        Self::try_postgres("scrip_test")
            .await
            .expect("set SCRIP_TEST_PG_URL to a PostgreSQL server to run the PostgreSQL tests")
    }

    /// A fresh database on `backend`; PostgreSQL schemas are named `PREFIX_…`.
    pub async fn new(backend: Backend, prefix: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => Self::try_sqlite(),
            Backend::Postgres => Self::try_postgres(prefix).await,
        }
    }

    fn try_sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
            dir: Some(dir),
            schema: None,
        })
    }

    async fn try_postgres(prefix: &str) -> anyhow::Result<Self> {
        let schema = PgSchema::try_create(prefix).await?;
        Ok(Self {
            url: schema.url.clone(),
            dir: None,
            schema: Some(schema),
        })
    }
}

/// A schema of its own in the PostgreSQL at `SCRIP_TEST_PG_URL`. It is left behind (CI drops
/// the `scrip_test_`, `scrip_crash_` and `scrip_bench_` schemas afterwards) unless
/// [`PgSchema::drop_now`] is called.
#[derive(Debug)]
pub struct PgSchema {
    /// Its name: the prefix and 16 random hex digits.
    pub name: String,
    /// The server's URL with the schema first on the `search_path` of every connection.
    pub url: String,
    /// A pool on the server's URL as given, for what the test does beside the service.
    pub admin: sqlx::PgPool,
}

impl PgSchema {
    /// Creates `PREFIX_<16 hex digits>`; panics without `SCRIP_TEST_PG_URL`.
    pub async fn create(prefix: &str) -> Self {
        Self::try_create(prefix)
            .await
            .expect("a schema in the PostgreSQL at SCRIP_TEST_PG_URL")
    }

    /// [`PgSchema::create`], returning what failed.
    pub async fn try_create(prefix: &str) -> anyhow::Result<Self> {
        let base = std::env::var(PG_URL_VAR).with_context(|| format!("{PG_URL_VAR} is not set"))?;
        let name = format!("{prefix}_{}", hex_suffix());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .context("connect to PostgreSQL")?;
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .context("create schema")?;
        // libpq's `options` sets the search path for every connection the service opens.
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Ok(Self { name, url, admin })
    }

    /// Drops the schema and everything in it.
    pub async fn drop_now(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&self.admin)
            .await
            .expect("drop schema");
    }
}

fn hex_suffix() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
