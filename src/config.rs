//! Settings: read once at start-up from environment variables and an optional TOML
//! file, parsed into types that cannot be wrong, and validated before anything starts.
//!
//! Every setting has one environment name (`CAREWIRE_*`, or `DATABASE_URL`) and one
//! TOML key (the same name, lower case, without the `CAREWIRE_` prefix). The
//! environment wins over the file. An unknown key in the file is an error, so a typo
//! never silently falls back to a default. Errors name the setting and where its
//! value came from; secret values are never echoed, and `Debug` prints them as
//! `[redacted]`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};

/// One known setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingDef {
    /// The environment variable.
    pub env: &'static str,
    /// Its value is a secret: never echoed in errors or logs.
    pub secret: bool,
}

impl SettingDef {
    /// The TOML key: the environment name in lower case, without `CAREWIRE_`.
    pub fn key(&self) -> String {
        self.env.trim_start_matches("CAREWIRE_").to_ascii_lowercase()
    }
}

const fn plain(env: &'static str) -> SettingDef {
    SettingDef { env, secret: false }
}

const fn secret(env: &'static str) -> SettingDef {
    SettingDef { env, secret: true }
}

/// Every setting Carewire reads. The README's configuration table documents each one
/// (a unit test keeps the two in step).
pub const SETTINGS: &[SettingDef] = &[
    plain("CAREWIRE_ENVIRONMENT"),
    plain("CAREWIRE_LISTEN"),
    plain("CAREWIRE_DATA_DIR"),
    plain("CAREWIRE_PG_BIN_DIR"),
    secret("DATABASE_URL"),
    secret("CAREWIRE_MIGRATION_DATABASE_URL"),
    plain("CAREWIRE_DB_POOL_SIZE"),
    plain("CAREWIRE_DB_ACQUIRE_TIMEOUT_MS"),
    plain("CAREWIRE_DB_STATEMENT_TIMEOUT_MS"),
    plain("CAREWIRE_DB_STARTUP_WAIT_SECS"),
    plain("CAREWIRE_LOG"),
    plain("CAREWIRE_LOG_FORMAT"),
    plain("CAREWIRE_BODY_LIMIT_BYTES"),
    plain("CAREWIRE_CORS_ORIGINS"),
    plain("CAREWIRE_HSTS_MAX_AGE_SECS"),
    plain("CAREWIRE_TRUST_FORWARDED_FOR"),
    plain("CAREWIRE_SHUTDOWN_GRACE_SECS"),
    plain("CAREWIRE_HTTP_HEADER_TIMEOUT_MS"),
    plain("CAREWIRE_HTTP_BODY_TIMEOUT_MS"),
    plain("CAREWIRE_HTTP_KEEP_ALIVE_TIMEOUT_SECS"),
    plain("CAREWIRE_HTTP_MAX_CONNECTIONS"),
    plain("CAREWIRE_WEB_CLIENT"),
    plain("CAREWIRE_DEMO"),
    secret("CAREWIRE_JWT_SECRET"),
    plain("CAREWIRE_JWT_ISSUER"),
    plain("CAREWIRE_JWT_AUDIENCE"),
    plain("CAREWIRE_ACCESS_TOKEN_TTL_SECS"),
    plain("CAREWIRE_REFRESH_TOKEN_TTL_SECS"),
    plain("CAREWIRE_SESSION_CHECK_TTL_MS"),
    plain("CAREWIRE_LOGIN_MAX_PER_ACCOUNT"),
    plain("CAREWIRE_LOGIN_MAX_PER_IP"),
    plain("CAREWIRE_LOGIN_WINDOW_SECS"),
    secret("CAREWIRE_KEK"),
    plain("CAREWIRE_KEK_FILE"),
    plain("CAREWIRE_KEY_MAX_ENCRYPTIONS"),
    plain("CAREWIRE_KEYRING_REFRESH_SECS"),
    plain("CAREWIRE_KEY_RETIRE_GRACE_SECS"),
    plain("CAREWIRE_CARE_RELATIONSHIP_DAYS"),
    plain("CAREWIRE_BREAK_GLASS_MINUTES"),
    plain("CAREWIRE_HOLD_TTL_SECS"),
    plain("CAREWIRE_MAX_HOLDS_PER_PATIENT"),
    plain("CAREWIRE_MAX_FUTURE_APPOINTMENTS_PER_PATIENT"),
    plain("CAREWIRE_WS_HEARTBEAT_SECS"),
    plain("CAREWIRE_WS_IDLE_TIMEOUT_SECS"),
    plain("CAREWIRE_WS_MAX_MESSAGE_BYTES"),
    plain("CAREWIRE_WS_MESSAGES_PER_SEC"),
    plain("CAREWIRE_WS_QUEUE"),
    plain("CAREWIRE_WS_TICKET_TTL_SECS"),
    plain("CAREWIRE_EVENT_RETENTION_DAYS"),
    plain("CAREWIRE_REMINDER_OFFSETS"),
    plain("CAREWIRE_REMINDER_LATE_AFTER_SECS"),
    plain("CAREWIRE_REMINDER_POLL_MS"),
    plain("CAREWIRE_WEBHOOK_URL"),
    secret("CAREWIRE_WEBHOOK_SECRET"),
    plain("CAREWIRE_WEBHOOK_MAX_ATTEMPTS"),
    plain("CAREWIRE_WEBHOOK_BACKOFF_MS"),
    plain("CAREWIRE_WEBHOOK_TIMEOUT_MS"),
    plain("CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES"),
    plain("CAREWIRE_CONSULT_CLOSES_AFTER_MINUTES"),
    plain("CAREWIRE_CONSULT_RECONNECT_GRACE_SECS"),
    plain("CAREWIRE_CONSULT_HEARTBEAT_TIMEOUT_SECS"),
    plain("CAREWIRE_CONSULT_EMPTY_ROOM_SECS"),
    plain("CAREWIRE_CONSULT_MAX_MESSAGE_BYTES"),
    plain("CAREWIRE_CONSULT_MESSAGES_PER_SEC"),
    plain("CAREWIRE_CONSULT_MESSAGE_BURST"),
    plain("CAREWIRE_STUN_URLS"),
    plain("CAREWIRE_TURN_URLS"),
    secret("CAREWIRE_TURN_SECRET"),
    plain("CAREWIRE_TURN_TTL_SECS"),
    secret("CAREWIRE_AUDIT_SIGNING_KEY"),
    plain("CAREWIRE_AUDIT_SIGNING_KEY_FILE"),
    plain("CAREWIRE_AUDIT_TRUSTED_KEYS"),
    plain("CAREWIRE_AUDIT_CHECKPOINT_FILE"),
    plain("CAREWIRE_AUDIT_CHECKPOINT_INTERVAL_SECS"),
    plain("CAREWIRE_AUDIT_SEAL_INTERVAL_MS"),
];

/// The environment variable that names the optional TOML file.
pub const CONFIG_FILE_ENV: &str = "CAREWIRE_CONFIG";

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting {setting} ({origin}): {message}")]
    Invalid {
        setting: &'static str,
        origin: Origin,
        message: String,
    },
    #[error("{setting} is required when CAREWIRE_ENVIRONMENT=production: {hint}")]
    RequiredInProduction {
        setting: &'static str,
        hint: &'static str,
    },
    #[error("{setting} is refused when CAREWIRE_ENVIRONMENT=production: {reason}")]
    RefusedInProduction {
        setting: &'static str,
        reason: &'static str,
    },
    #[error("cannot read the configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("unknown setting `{key}` in the configuration file {path}")]
    UnknownKey { key: String, path: PathBuf },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Environment,
    File(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Environment => f.write_str("from the environment"),
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Whether this is a development machine or a real deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Missing secrets are generated into the data folder, with a loud warning.
    Development,
    /// Missing secrets are an error.
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// All settings, typed and validated.
#[derive(Debug)]
pub struct Settings {
    pub environment: Environment,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Folder for the embedded database and development secrets.
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub crypto: CryptoSettings,
    pub audit: AuditSettings,
    pub records: RecordsSettings,
    pub scheduling: SchedulingSettings,
    pub realtime: RealtimeSettings,
    pub reminders: ReminderSettings,
    pub webhook: Option<WebhookSettings>,
    pub consult: ConsultSettings,
    /// Seed the demo clinic at start-up (`CAREWIRE_DEMO`, or `serve --demo`): a
    /// provider with a published password, for trying the client. Never in production.
    pub demo: bool,
}

/// When an appointment's consultation room is open relative to the appointment
/// (`CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES` and its sibling): scheduling shows it,
/// admission enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The room opens this long before the start (the waiting room).
    pub opens_before: Duration,
    /// ...and closes this long after the end (calls overrun).
    pub closes_after: Duration,
}

impl Window {
    /// When the room of an appointment running from `starts_at` to `ends_at` is open.
    pub fn around(
        &self,
        starts_at: chrono::DateTime<chrono::Utc>,
        ends_at: chrono::DateTime<chrono::Utc>,
    ) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        (
            starts_at - chrono::Duration::from_std(self.opens_before).unwrap_or_default(),
            ends_at + chrono::Duration::from_std(self.closes_after).unwrap_or_default(),
        )
    }
}

/// Video consultations: when rooms open, how long seats are held, the ICE servers.
#[derive(Debug)]
pub struct ConsultSettings {
    /// From how long before the start until how long after the end a room is open.
    pub window: Window,
    /// The room's timings (grace period, heartbeat, empty room); the rest are the
    /// protocol's defaults.
    pub room: carewire_signaling::RoomConfig,
    /// STUN and TURN servers, and the TURN shared secret for coturn credentials.
    pub ice: carewire_signaling::IceConfig,
    /// Largest frame a consultation socket reads; larger closes it with 1009. At least
    /// the protocol's own limit (larger messages than that get `BAD_MESSAGE`).
    pub max_message_bytes: usize,
}

#[derive(Debug)]
pub struct RealtimeSettings {
    /// How often the server pings each WebSocket.
    pub heartbeat: Duration,
    /// A socket silent for this long (no frame, not even a pong) is closed.
    pub idle_timeout: Duration,
    /// Largest client message (bytes); larger closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Client messages per second per socket (bursts of twice that).
    pub messages_per_sec: u32,
    /// Messages queued for one socket before it counts as a slow consumer (1013).
    pub queue: usize,
    /// How long a WebSocket ticket stays valid.
    pub ticket_ttl: Duration,
    /// How long events are kept for resume.
    pub retention: Duration,
}

#[derive(Debug)]
pub struct ReminderSettings {
    /// Default reminder offsets before an appointment's start, largest first.
    pub offsets_minutes: Vec<i32>,
    /// A reminder sent this long after its due time is marked late.
    pub late_after: Duration,
    /// How often each instance looks for due reminders and webhook deliveries.
    pub poll: Duration,
}

/// The webhook channel: every notification is also POSTed here, signed.
#[derive(Debug)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: SecretBytes,
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long.
    pub backoff: Duration,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct SchedulingSettings {
    /// How long a held slot (a pending appointment) waits for confirmation.
    pub hold_ttl: Duration,
    /// Most slots a patient may hold (pending) at once, booking for themselves.
    pub max_holds_per_patient: i64,
    /// Most future appointments (held or booked) a patient may have, booking for
    /// themselves.
    pub max_future_appointments_per_patient: i64,
}

#[derive(Debug)]
pub struct DatabaseSettings {
    /// `None`: run the embedded cluster in `data_dir/pg`.
    pub url: Option<DatabaseUrl>,
    /// The owner role that migrates (`carewire migrate`, and `serve` at start-up when
    /// given); `None`: `url` migrates, as a single-role setup.
    pub migration_url: Option<DatabaseUrl>,
    /// Where the embedded cluster's PostgreSQL binaries are; `None` searches.
    pub pg_bin_dir: Option<PathBuf>,
    pub pool_size: u32,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout: Duration,
    /// Server-side cap on any one statement.
    pub statement_timeout: Duration,
    /// How long `serve` keeps trying to reach PostgreSQL at start-up (not yet up, or
    /// refusing connections because it is full) before it gives up.
    pub startup_wait: Duration,
}

#[derive(Debug)]
pub struct HttpSettings {
    pub body_limit: usize,
    /// Exact origins (scheme://host[:port]) allowed by CORS and WebSocket Origin checks.
    pub cors_origins: Vec<String>,
    pub hsts_max_age: Option<u64>,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a proxy).
    pub trust_forwarded_for: bool,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Serve the embedded browser client at `/` (false: API only).
    pub web_client: bool,
    /// From a request's start (or the connection's) to its last header byte.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the last byte of its body.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    /// Most client connections at once (WebSockets included); more get a 503.
    pub max_connections: usize,
}

#[derive(Debug)]
pub struct LogSettings {
    /// A tracing `EnvFilter` directive, such as `info` or `carewire=debug,info`.
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug)]
pub struct AuthSettings {
    pub jwt_secret: Option<SecretBytes>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long a positive "session still valid" answer may be reused.
    pub session_check_ttl: Duration,
    pub login_max_per_account: u32,
    pub login_max_per_ip: u32,
    pub login_window: Duration,
}

#[derive(Debug)]
pub struct CryptoSettings {
    /// The key-encryption key, base64 of 32 bytes.
    pub kek: Option<SecretBytes>,
    /// A file holding the KEK (base64 of 32 bytes).
    pub kek_file: Option<PathBuf>,
    /// Encryptions one data key may perform before a new version takes over.
    pub max_encryptions_per_key: u64,
    /// How often each instance reloads the key ring.
    pub keyring_refresh: Duration,
    /// How long after a rotation the previous version may not be retired (instances
    /// may still be writing with it until they reload).
    pub retire_grace: Duration,
}

#[derive(Debug)]
pub struct RecordsSettings {
    /// How far before and after an appointment (or a provider's registering the
    /// patient) the provider may read the patient's record.
    pub care_relationship_window: Duration,
    /// How long a break-glass grant lasts.
    pub break_glass_duration: Duration,
}

#[derive(Debug)]
pub struct AuditSettings {
    /// Ed25519 seed (32 bytes) that signs checkpoints.
    pub signing_key: Option<SecretBytes>,
    pub signing_key_file: Option<PathBuf>,
    /// Public keys of earlier signing keys, still trusted when verifying.
    pub trusted_keys: Vec<[u8; 32]>,
    /// The external sink: checkpoints are appended here as JSON lines.
    pub checkpoint_file: PathBuf,
    pub checkpoint_interval: Duration,
    /// How often the sealer looks for new events when idle.
    pub seal_interval: Duration,
}

/// Secret bytes that zeroize on drop and never print.
pub type SecretBytes = SecretBox<Vec<u8>>;

/// A database URL: kept secret because it may hold a password; shown without it.
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(SecretString::from(url.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, for the one log line that says which
    /// database we use.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

fn redact_url(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:[redacted]@host/db
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        let masked = if userinfo.contains(':') {
            format!("{user}:[redacted]")
        } else {
            user.to_owned()
        };
        return format!("{scheme}://{masked}@{host}");
    }
    // key=value form: hide password=...
    url.split_whitespace()
        .map(|part| {
            if part.starts_with("password=") {
                "password=[redacted]"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Raw values by environment name, with where each came from.
struct RawValues(BTreeMap<&'static str, (String, Origin)>);

impl RawValues {
    fn get(&self, env: &'static str) -> Option<(&str, &Origin)> {
        self.0.get(env).map(|(v, o)| (v.as_str(), o))
    }
}

impl Settings {
    /// Settings from the process environment and, when `CAREWIRE_CONFIG` or
    /// `config_file` names one, a TOML file.
    pub fn from_env(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load(|name| std::env::var(name).ok(), config_file)
    }

    /// Settings from any lookup (tests pass a map) and an optional file.
    pub fn load(
        lookup: impl Fn(&str) -> Option<String>,
        config_file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let mut raw = BTreeMap::new();
        let file = config_file.map(Path::to_path_buf).or_else(|| {
            lookup(CONFIG_FILE_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = file {
            read_file(&path, &mut raw)?;
        }
        for def in SETTINGS {
            if let Some(value) = lookup(def.env).filter(|v| !v.is_empty()) {
                raw.insert(def.env, (value, Origin::Environment));
            }
        }
        Settings::parse(&RawValues(raw))
    }

    fn parse(raw: &RawValues) -> Result<Settings, ConfigError> {
        let p = Parser { raw };
        let environment = p.parse("CAREWIRE_ENVIRONMENT", Environment::Development, |v| {
            match v.to_ascii_lowercase().as_str() {
                "development" | "dev" => Ok(Environment::Development),
                "production" | "prod" => Ok(Environment::Production),
                _ => Err("expected `development` or `production`".into()),
            }
        })?;
        let data_dir = p.parse("CAREWIRE_DATA_DIR", PathBuf::from(".carewire"), |v| {
            Ok(PathBuf::from(v))
        })?;
        let settings = Settings {
            environment,
            listen: p.parse("CAREWIRE_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)), |v| {
                v.parse()
                    .map_err(|_| "expected an address such as 127.0.0.1:8080 or 0.0.0.0:8080".into())
            })?,
            data_dir: data_dir.clone(),
            database: DatabaseSettings {
                url: p.optional("DATABASE_URL", |v| Ok(DatabaseUrl::new(v)))?,
                migration_url: p.optional("CAREWIRE_MIGRATION_DATABASE_URL", |v| Ok(DatabaseUrl::new(v)))?,
                pg_bin_dir: p.optional("CAREWIRE_PG_BIN_DIR", |v| Ok(PathBuf::from(v)))?,
                pool_size: p.number("CAREWIRE_DB_POOL_SIZE", 16, 1, 1000)?,
                acquire_timeout: p.millis("CAREWIRE_DB_ACQUIRE_TIMEOUT_MS", 2_000, 10, 600_000)?,
                statement_timeout: p.millis("CAREWIRE_DB_STATEMENT_TIMEOUT_MS", 30_000, 100, 3_600_000)?,
                startup_wait: p.secs("CAREWIRE_DB_STARTUP_WAIT_SECS", 30, 0, 3_600)?,
            },
            http: HttpSettings {
                body_limit: p.number("CAREWIRE_BODY_LIMIT_BYTES", 64 * 1024, 1024, 64 * 1024 * 1024)?,
                cors_origins: p.parse("CAREWIRE_CORS_ORIGINS", Vec::new(), parse_origins)?,
                hsts_max_age: p.optional("CAREWIRE_HSTS_MAX_AGE_SECS", |v| {
                    v.parse::<u64>()
                        .map_err(|_| "expected a number of seconds".into())
                })?,
                trust_forwarded_for: p.parse("CAREWIRE_TRUST_FORWARDED_FOR", false, parse_bool)?,
                shutdown_grace: p.secs("CAREWIRE_SHUTDOWN_GRACE_SECS", 30, 0, 3600)?,
                web_client: p.parse("CAREWIRE_WEB_CLIENT", true, parse_bool)?,
                header_timeout: p.millis("CAREWIRE_HTTP_HEADER_TIMEOUT_MS", 5_000, 100, 600_000)?,
                body_timeout: p.millis("CAREWIRE_HTTP_BODY_TIMEOUT_MS", 30_000, 100, 3_600_000)?,
                keep_alive_timeout: p.secs("CAREWIRE_HTTP_KEEP_ALIVE_TIMEOUT_SECS", 30, 1, 3600)?,
                max_connections: p.number("CAREWIRE_HTTP_MAX_CONNECTIONS", 10_000, 1, 1_000_000)?,
            },
            log: LogSettings {
                filter: p.parse("CAREWIRE_LOG", "info".to_owned(), |v| {
                    tracing_subscriber::EnvFilter::try_new(v)
                        .map(|_| v.to_owned())
                        .map_err(|e| format!("not a valid log filter: {e}"))
                })?,
                format: p.parse("CAREWIRE_LOG_FORMAT", LogFormat::Text, |v| {
                    match v.to_ascii_lowercase().as_str() {
                        "text" => Ok(LogFormat::Text),
                        "json" => Ok(LogFormat::Json),
                        _ => Err("expected `text` or `json`".into()),
                    }
                })?,
            },
            auth: AuthSettings {
                jwt_secret: p.optional("CAREWIRE_JWT_SECRET", |v| {
                    if v.len() < 32 {
                        Err("must be at least 32 bytes long".into())
                    } else {
                        Ok(SecretBox::new(Box::new(v.as_bytes().to_vec())))
                    }
                })?,
                issuer: p.parse("CAREWIRE_JWT_ISSUER", "carewire".to_owned(), non_empty)?,
                audience: p.parse("CAREWIRE_JWT_AUDIENCE", "carewire-api".to_owned(), non_empty)?,
                access_token_ttl: p.secs("CAREWIRE_ACCESS_TOKEN_TTL_SECS", 900, 30, 86_400)?,
                refresh_token_ttl: p.secs(
                    "CAREWIRE_REFRESH_TOKEN_TTL_SECS",
                    30 * 86_400,
                    60,
                    365 * 86_400,
                )?,
                session_check_ttl: p.millis("CAREWIRE_SESSION_CHECK_TTL_MS", 1_000, 0, 60_000)?,
                login_max_per_account: p.number("CAREWIRE_LOGIN_MAX_PER_ACCOUNT", 10, 1, 10_000)?,
                login_max_per_ip: p.number("CAREWIRE_LOGIN_MAX_PER_IP", 100, 1, 1_000_000)?,
                login_window: p.secs("CAREWIRE_LOGIN_WINDOW_SECS", 900, 1, 86_400)?,
            },
            crypto: CryptoSettings {
                kek: p.optional("CAREWIRE_KEK", |v| {
                    parse_key(v).map(|k| SecretBox::new(Box::new(k)))
                })?,
                kek_file: p.optional("CAREWIRE_KEK_FILE", |v| Ok(PathBuf::from(v)))?,
                max_encryptions_per_key: p.number("CAREWIRE_KEY_MAX_ENCRYPTIONS", 1 << 30, 16, 1 << 31)?,
                keyring_refresh: p.secs("CAREWIRE_KEYRING_REFRESH_SECS", 10, 1, 3600)?,
                retire_grace: p.secs("CAREWIRE_KEY_RETIRE_GRACE_SECS", 60, 0, 86_400)?,
            },
            scheduling: SchedulingSettings {
                hold_ttl: p.secs("CAREWIRE_HOLD_TTL_SECS", 300, 10, 86_400)?,
                max_holds_per_patient: p.number("CAREWIRE_MAX_HOLDS_PER_PATIENT", 2, 1, 100)?,
                max_future_appointments_per_patient: p.number(
                    "CAREWIRE_MAX_FUTURE_APPOINTMENTS_PER_PATIENT",
                    10,
                    1,
                    1000,
                )?,
            },
            realtime: RealtimeSettings {
                heartbeat: p.secs("CAREWIRE_WS_HEARTBEAT_SECS", 20, 1, 3600)?,
                idle_timeout: p.secs("CAREWIRE_WS_IDLE_TIMEOUT_SECS", 60, 2, 7200)?,
                max_message_bytes: p.number("CAREWIRE_WS_MAX_MESSAGE_BYTES", 16 * 1024, 256, 1024 * 1024)?,
                messages_per_sec: p.number("CAREWIRE_WS_MESSAGES_PER_SEC", 20, 1, 10_000)?,
                queue: p.number("CAREWIRE_WS_QUEUE", 256, 1, 100_000)?,
                ticket_ttl: p.secs("CAREWIRE_WS_TICKET_TTL_SECS", 30, 1, 600)?,
                retention: p
                    .number("CAREWIRE_EVENT_RETENTION_DAYS", 7u64, 1, 365)
                    .map(|d| Duration::from_secs(d * 86_400))?,
            },
            reminders: ReminderSettings {
                offsets_minutes: p.parse("CAREWIRE_REMINDER_OFFSETS", vec![1440, 60, 10], parse_offsets)?,
                late_after: p.secs("CAREWIRE_REMINDER_LATE_AFTER_SECS", 60, 0, 86_400)?,
                poll: p.millis("CAREWIRE_REMINDER_POLL_MS", 1_000, 10, 60_000)?,
            },
            webhook: match p.optional("CAREWIRE_WEBHOOK_URL", parse_webhook_url)? {
                None => None,
                Some(url) => Some(WebhookSettings {
                    url,
                    secret: p
                        .optional("CAREWIRE_WEBHOOK_SECRET", |v| {
                            if v.len() < 32 {
                                Err("must be at least 32 bytes long".into())
                            } else {
                                Ok(SecretBox::new(Box::new(v.as_bytes().to_vec())))
                            }
                        })?
                        .ok_or(ConfigError::Invalid {
                            setting: "CAREWIRE_WEBHOOK_SECRET",
                            origin: Origin::Default,
                            message: "is required when CAREWIRE_WEBHOOK_URL is set".into(),
                        })?,
                    max_attempts: p.number("CAREWIRE_WEBHOOK_MAX_ATTEMPTS", 8, 1, 100)?,
                    backoff: p.millis("CAREWIRE_WEBHOOK_BACKOFF_MS", 1_000, 10, 3_600_000)?,
                    timeout: p.millis("CAREWIRE_WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000)?,
                }),
            },
            consult: {
                let heartbeat_timeout = p.secs("CAREWIRE_CONSULT_HEARTBEAT_TIMEOUT_SECS", 15, 3, 600)?;
                let room = carewire_signaling::RoomConfig {
                    reconnect_grace: p.secs("CAREWIRE_CONSULT_RECONNECT_GRACE_SECS", 20, 1, 600)?,
                    empty_timeout: p.secs("CAREWIRE_CONSULT_EMPTY_ROOM_SECS", 300, 1, 86_400)?,
                    // Three pings fit in the timeout, so one lost ping is not a drop.
                    ping_interval: heartbeat_timeout / 3,
                    heartbeat_timeout,
                    rate_limit: carewire_signaling::RateLimit {
                        burst: p.number("CAREWIRE_CONSULT_MESSAGE_BURST", 60, 1, 10_000)?,
                        per_second: p.number("CAREWIRE_CONSULT_MESSAGES_PER_SEC", 20, 1, 10_000)?,
                    },
                    ..carewire_signaling::RoomConfig::default()
                };
                let urls = |v: &str| {
                    Ok(v.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<String>>())
                };
                let stun = p.parse("CAREWIRE_STUN_URLS", Vec::new(), urls)?;
                let turn = p.parse("CAREWIRE_TURN_URLS", Vec::new(), urls)?;
                let secret = p.optional("CAREWIRE_TURN_SECRET", |v| {
                    if v.len() < 16 {
                        Err("must be at least 16 bytes long".into())
                    } else {
                        Ok(carewire_signaling::TurnSecret::new(v.as_bytes().to_vec()))
                    }
                })?;
                let ttl = p.secs("CAREWIRE_TURN_TTL_SECS", 6 * 3600, 60, 7 * 86_400)?;
                ConsultSettings {
                    // Every message the protocol allows must fit.
                    max_message_bytes: p.number(
                        "CAREWIRE_CONSULT_MAX_MESSAGE_BYTES",
                        256 * 1024,
                        carewire_signaling::protocol::MAX_FRAME_BYTES,
                        4 * 1024 * 1024,
                    )?,
                    window: Window {
                        opens_before: p
                            .number("CAREWIRE_CONSULT_OPENS_BEFORE_MINUTES", 15u64, 0, 24 * 60)
                            .map(|m| Duration::from_secs(m * 60))?,
                        closes_after: p
                            .number("CAREWIRE_CONSULT_CLOSES_AFTER_MINUTES", 30u64, 0, 24 * 60)
                            .map(|m| Duration::from_secs(m * 60))?,
                    },
                    room,
                    ice: carewire_signaling::IceConfig::new(stun, turn, secret, ttl).map_err(|e| {
                        ConfigError::Invalid {
                            setting: "CAREWIRE_TURN_URLS",
                            origin: Origin::Default,
                            message: e.to_string(),
                        }
                    })?,
                }
            },
            records: RecordsSettings {
                care_relationship_window: p
                    .number("CAREWIRE_CARE_RELATIONSHIP_DAYS", 90u64, 1, 3650)
                    .map(|d| Duration::from_secs(d * 86_400))?,
                break_glass_duration: p
                    .number("CAREWIRE_BREAK_GLASS_MINUTES", 60u64, 1, 24 * 60)
                    .map(|m| Duration::from_secs(m * 60))?,
            },
            audit: AuditSettings {
                signing_key: p.optional("CAREWIRE_AUDIT_SIGNING_KEY", |v| {
                    parse_key(v).map(|k| SecretBox::new(Box::new(k)))
                })?,
                signing_key_file: p.optional("CAREWIRE_AUDIT_SIGNING_KEY_FILE", |v| Ok(PathBuf::from(v)))?,
                trusted_keys: p.parse("CAREWIRE_AUDIT_TRUSTED_KEYS", Vec::new(), |v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(|k| {
                            parse_key(k)
                                .and_then(|b| b.try_into().map_err(|_| "expected 32 bytes".to_owned()))
                                .map_err(|_| "expected comma-separated base64 Ed25519 public keys".to_owned())
                        })
                        .collect()
                })?,
                checkpoint_file: p
                    .optional("CAREWIRE_AUDIT_CHECKPOINT_FILE", |v| Ok(PathBuf::from(v)))?
                    .unwrap_or_else(|| data_dir.join("audit-checkpoints.jsonl")),
                checkpoint_interval: p.secs("CAREWIRE_AUDIT_CHECKPOINT_INTERVAL_SECS", 60, 1, 86_400)?,
                seal_interval: p.millis("CAREWIRE_AUDIT_SEAL_INTERVAL_MS", 100, 10, 60_000)?,
            },
            demo: p.parse("CAREWIRE_DEMO", false, parse_bool)?,
        };
        settings.check_production()?;
        Ok(settings)
    }

    /// The demo clinic publishes a password: it has no place in production. Checked
    /// when settings are read and again at start-up (`serve --demo` turns it on after).
    pub fn check_demo(&self) -> Result<(), ConfigError> {
        if self.demo && self.environment == Environment::Production {
            return Err(ConfigError::RefusedInProduction {
                setting: "CAREWIRE_DEMO",
                reason: "the demo clinic creates an account whose password is published; \
                         use it only in development",
            });
        }
        Ok(())
    }

    /// In production nothing secret is generated: it must be configured.
    fn check_production(&self) -> Result<(), ConfigError> {
        self.check_demo()?;
        if self.environment != Environment::Production {
            return Ok(());
        }
        if self.auth.jwt_secret.is_none() {
            return Err(ConfigError::RequiredInProduction {
                setting: "CAREWIRE_JWT_SECRET",
                hint: "set it to a random string of at least 32 bytes",
            });
        }
        if self.audit.signing_key.is_none() && self.audit.signing_key_file.is_none() {
            return Err(ConfigError::RequiredInProduction {
                setting: "CAREWIRE_AUDIT_SIGNING_KEY",
                hint: "set CAREWIRE_AUDIT_SIGNING_KEY (base64 of a 32-byte Ed25519 seed) or CAREWIRE_AUDIT_SIGNING_KEY_FILE",
            });
        }
        if self.crypto.kek.is_none() && self.crypto.kek_file.is_none() {
            return Err(ConfigError::RequiredInProduction {
                setting: "CAREWIRE_KEK",
                hint: "set CAREWIRE_KEK (base64 of 32 random bytes) or CAREWIRE_KEK_FILE",
            });
        }
        Ok(())
    }
}

/// Decodes a 256-bit key given as base64.
pub fn parse_key(value: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| "expected base64 of 32 bytes (e.g. `openssl rand -base64 32`)".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!("expected 32 bytes, got {}", bytes.len()));
    }
    Ok(bytes)
}

/// Reminder offsets such as `24h,1h,10m` (also `2d`, or plain minutes), largest first.
fn parse_offsets(v: &str) -> Result<Vec<i32>, String> {
    let mut offsets = v
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let (number, unit) = o.split_at(o.find(|c: char| !c.is_ascii_digit()).unwrap_or(o.len()));
            let n: i32 = number
                .parse()
                .map_err(|_| format!("`{o}` is not a duration such as 24h, 1h or 10m"))?;
            let minutes = match unit {
                "" | "m" => Some(n),
                "h" => n.checked_mul(60),
                "d" => n.checked_mul(1440),
                _ => None,
            };
            minutes
                .filter(|m| (1..=43_200).contains(m))
                .ok_or_else(|| format!("`{o}` must be between 1 minute and 30 days"))
        })
        .collect::<Result<Vec<i32>, String>>()?;
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    offsets.dedup();
    if offsets.len() > 5 {
        return Err("at most 5 offsets".into());
    }
    Ok(offsets)
}

fn parse_webhook_url(v: &str) -> Result<String, String> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.to_owned())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_owned())
    }
}

fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let uri: http::Uri = origin
            .parse()
            .map_err(|_| format!("`{origin}` is not an origin such as https://app.example.com"))?;
        let ok = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some()
            && uri.path() == "/"
            && !origin.ends_with('/');
        if !ok {
            return Err(format!(
                "`{origin}` is not an origin such as https://app.example.com (scheme and host, no path)"
            ));
        }
        origins.push(origin.to_ascii_lowercase());
    }
    Ok(origins)
}

struct Parser<'a> {
    raw: &'a RawValues,
}

impl Parser<'_> {
    fn def(env: &'static str) -> SettingDef {
        SETTINGS
            .iter()
            .copied()
            .find(|d| d.env == env)
            .unwrap_or(SettingDef { env, secret: true })
    }

    fn parse<T>(
        &self,
        env: &'static str,
        default: T,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self.optional(env, f)?.unwrap_or(default))
    }

    fn optional<T>(
        &self,
        env: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.raw.get(env) else {
            return Ok(None);
        };
        f(value).map(Some).map_err(|message| {
            let shown = if Self::def(env).secret {
                message
            } else {
                format!("{message}, got {value:?}")
            };
            ConfigError::Invalid {
                setting: env,
                origin: origin.clone(),
                message: shown,
            }
        })
    }

    fn number<T>(&self, env: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.parse(env, default, |v| match v.trim().parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(format!("expected a whole number from {min} to {max}")),
        })
    }

    fn millis(&self, env: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.number(env, default, min, max).map(Duration::from_millis)
    }

    fn secs(&self, env: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.number(env, default, min, max).map(Duration::from_secs)
    }
}

fn read_file(path: &Path, raw: &mut BTreeMap<&'static str, (String, Origin)>) -> Result<(), ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.message().to_owned()))?;
    for (key, value) in table {
        let Some(def) = SETTINGS.iter().find(|d| d.key() == key) else {
            return Err(ConfigError::UnknownKey {
                key,
                path: path.to_path_buf(),
            });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| item.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        raw.insert(def.env, (value, Origin::File(path.to_path_buf())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load(|name| map.get(name).cloned(), None)
    }

    #[test]
    fn defaults_are_usable_without_any_setting() {
        let s = load(&[]).unwrap();
        assert_eq!(s.listen.port(), 8080);
        assert!(s.database.url.is_none());
        assert_eq!(s.http.body_limit, 65536);
        assert_eq!(s.auth.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn a_bad_number_names_the_setting_and_the_value() {
        let err = load(&[("CAREWIRE_DB_POOL_SIZE", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAREWIRE_DB_POOL_SIZE"), "{err}");
        assert!(err.contains("lots"), "{err}");
    }

    #[test]
    fn a_bad_secret_is_named_but_never_echoed() {
        let err = load(&[("CAREWIRE_JWT_SECRET", "short-secret")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAREWIRE_JWT_SECRET"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets_and_database_passwords() {
        let s = load(&[
            (
                "DATABASE_URL",
                "postgres://carewire:hunter2hunter2@db:5432/carewire",
            ),
            (
                "CAREWIRE_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-topsecret",
            ),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(
            shown.contains("postgres://carewire:[redacted]@db:5432/carewire"),
            "{shown}"
        );
    }

    #[test]
    fn production_refuses_to_run_without_configured_secrets() {
        let err = load(&[("CAREWIRE_ENVIRONMENT", "production")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAREWIRE_JWT_SECRET"), "{err}");
    }

    #[test]
    fn the_web_client_is_on_and_the_demo_off_unless_asked() {
        let s = load(&[]).unwrap();
        assert!(s.http.web_client);
        assert!(!s.demo);
        let s = load(&[("CAREWIRE_WEB_CLIENT", "false"), ("CAREWIRE_DEMO", "true")]).unwrap();
        assert!(!s.http.web_client);
        assert!(s.demo);
    }

    #[test]
    fn the_demo_clinic_is_refused_in_production() {
        let err = load(&[
            ("CAREWIRE_ENVIRONMENT", "production"),
            ("CAREWIRE_DEMO", "true"),
            ("CAREWIRE_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("CAREWIRE_KEK", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            (
                "CAREWIRE_AUDIT_SIGNING_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("CAREWIRE_DEMO"), "{err}");
    }

    #[test]
    fn origins_must_be_scheme_and_host_only() {
        assert!(
            load(&[(
                "CAREWIRE_CORS_ORIGINS",
                "https://app.example.com, http://localhost:3000"
            )])
            .is_ok()
        );
        assert!(load(&[("CAREWIRE_CORS_ORIGINS", "https://app.example.com/path")]).is_err());
        assert!(load(&[("CAREWIRE_CORS_ORIGINS", "*")]).is_err());
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carewire.toml");
        std::fs::write(
            &path,
            "db_pool_size = 7\nlisten = \"127.0.0.1:9000\"\ncors_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        let s = Settings::load(
            |name| (name == "CAREWIRE_LISTEN").then(|| "127.0.0.1:9100".to_owned()),
            Some(&path),
        )
        .unwrap();
        assert_eq!(s.database.pool_size, 7);
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(s.http.cors_origins, vec!["https://a.example".to_owned()]);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carewire.toml");
        std::fs::write(&path, "db_pool_sise = 7\n").unwrap();
        let err = Settings::load(|_| None, Some(&path)).unwrap_err().to_string();
        assert!(err.contains("db_pool_sise"), "{err}");
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../README.md");
        for def in SETTINGS {
            assert!(
                readme.contains(&format!("`{}`", def.env)),
                "README lacks {}",
                def.env
            );
        }
        assert!(readme.contains(&format!("`{CONFIG_FILE_ENV}`")));
    }
}
