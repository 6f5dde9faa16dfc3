//! The audit log against a real server and database: what is recorded, that it is
//! append-only for the application, that concurrent writers all land in one gapless
//! chain, that tampering is caught and named, that a crash loses nothing, and that
//! an operation whose audit write fails does not happen.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::{PASSWORD, TestApp, problem_type, unique_email};
use carewire::audit::{Actor, AuditEvent, Code, DetailValue, action, purpose, resource};
use carewire_audit::checkpoint::CheckpointSigner;
use carewire_audit::verify::{Finding, Tamper};
use diesel::RunQueryDsl;
use diesel::pg::PgConnection;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn signer() -> CheckpointSigner {
    let seed: [u8; 32] = carewire::config::parse_key(support::AUDIT_SIGNING_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    CheckpointSigner::from_seed(&seed)
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).unwrap().n
}

/// Waits until every committed audit row is sealed.
async fn wait_sealed(app: &TestApp) {
    let mut conn = app.db.connect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while carewire_audit::store::unsealed_count(&mut conn).unwrap() > 0 {
        assert!(Instant::now() < deadline, "the sealer did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Verifies the test database's log with the external checkpoint file (none yet
/// while the server has not written a checkpoint).
fn verify(app: &TestApp) -> Result<carewire::audit::verification::Report, Finding> {
    let file = app.checkpoint_file();
    let external = if file.exists() {
        carewire::audit::verification::read_checkpoint_file(&file).unwrap()
    } else {
        Vec::new()
    };
    // Three readers over pages of four entries: every tamper test also checks that
    // pages read at once are put back in order, and found at the right entry.
    carewire::audit::verification::verify_database(
        &mut app.db.connect(),
        carewire::audit::verification::Readers::Parallel {
            url: &app.db.url,
            jobs: 3,
            page: 4,
        },
        &[signer().verifying_key()],
        external,
        None,
        |_, _| {},
    )
    .unwrap()
}

/// Writes `n` events straight into the log, as a feature's transaction would.
fn write_events(conn: &mut PgConnection, n: usize) {
    for i in 0..n {
        let event = AuditEvent::new(
            Actor::System {
                component: Code::new("test"),
            },
            action::EXECUTE,
            resource::AUDIT_LOG,
            purpose::OPERATIONS,
        )
        .detail(Code::new("i"), DetailValue::Count(i as i64));
        carewire::audit::record(conn, &event).unwrap();
    }
}

/// A server whose log holds `n` sealed events under a final checkpoint (stopping the
/// server seals and checkpoints), its database kept for tampering.
async fn sealed_log(n: usize) -> TestApp {
    let mut app = TestApp::spawn().await;
    write_events(&mut app.db.connect(), n);
    wait_sealed(&app).await;
    app.shutdown().await;
    app
}

/// Runs SQL as a superuser with triggers off: how an attacker with database
/// administrator rights edits the log.
fn tamper(app: &TestApp, sql: &str) {
    let mut conn = app.db.connect();
    diesel::sql_query("SET session_replication_role = replica")
        .execute(&mut conn)
        .unwrap();
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        diesel::sql_query(statement).execute(&mut conn).unwrap();
    }
}

fn finding(app: &TestApp) -> (u64, Tamper) {
    match verify(app) {
        Err(f) => (f.seq, f.tamper),
        Ok(report) => panic!("tampering went unnoticed: {report:?}"),
    }
}

async fn events(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let res = app.get_as(&format!("/v1/admin/audit?{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn sign_ins_refreshes_sign_outs_and_failures_are_recorded() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    app.login(&patient.email, "a wrong password, for sure").await;
    app.login(&unique_email("nobody"), PASSWORD).await;
    app.post_json(
        "/v1/auth/refresh",
        &json!({ "refresh_token": patient.tokens.refresh }),
    )
    .await;
    app.post_as("/v1/auth/logout", &patient.tokens.access, &json!({}))
        .await;

    let admin_token = &admin.tokens.access;
    let logins = events(&app, admin_token, &format!("action=login&actor={}", patient.id)).await;
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0]["outcome"], "success");
    assert_eq!(logins[0]["resource"]["type"], "session");
    assert!(logins[0]["request_id"].is_string());
    assert_eq!(logins[0]["client_ip"], "127.0.0.1");

    let failures = events(&app, admin_token, "action=login_failed").await;
    let reasons: Vec<&str> = failures
        .iter()
        .map(|e| e["failure_reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"wrong_password"), "{reasons:?}");
    assert!(reasons.contains(&"unknown_email"), "{reasons:?}");
    let wrong = failures
        .iter()
        .find(|e| e["failure_reason"] == "wrong_password")
        .unwrap();
    assert_eq!(wrong["actor"]["id"], patient.id.as_str());
    let unknown = failures
        .iter()
        .find(|e| e["failure_reason"] == "unknown_email")
        .unwrap();
    assert_eq!(unknown["actor"]["kind"], "anonymous");

    assert_eq!(events(&app, admin_token, "action=token_refresh").await.len(), 1);
    assert_eq!(
        events(&app, admin_token, &format!("action=logout&actor={}", patient.id))
            .await
            .len(),
        1
    );
    // Nothing personal is in an event: no email anywhere.
    let everything = events(&app, admin_token, "limit=500").await;
    assert!(
        !serde_json::to_string(&everything)
            .unwrap()
            .contains(&patient.email)
    );
}

#[tokio::test]
async fn a_forbidden_request_is_recorded_as_access_denied() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    let res = app.get_as("/v1/admin/audit", &patient.tokens.access).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let denied = events(&app, &admin.tokens.access, "action=access_denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["actor"]["id"], patient.id.as_str());
    assert_eq!(denied[0]["outcome"], "failure");
    assert_eq!(denied[0]["failure_reason"], "role_not_allowed");
}

#[tokio::test]
async fn disabling_an_account_and_reading_accounts_are_recorded() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let patient = app.patient().await;
    app.get_as("/v1/me", &patient.tokens.access).await;
    app.post_as(
        &format!("/v1/admin/users/{}/disable", patient.id),
        &admin.tokens.access,
        &json!({}),
    )
    .await;
    let updates = events(&app, &admin.tokens.access, "action=update").await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["resource"]["id"], patient.id.as_str());
    assert_eq!(updates[0]["details"]["change"], json!({ "code": "disabled" }));
    assert_eq!(updates[0]["details"]["sessions_ended"], json!({ "count": 1 }));
    let reads = events(
        &app,
        &admin.tokens.access,
        &format!("action=read&actor={}", patient.id),
    )
    .await;
    assert_eq!(reads.len(), 1, "the patient's read of their own account");
}

#[tokio::test]
async fn the_admin_search_filters_pages_and_is_itself_audited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for _ in 0..5 {
        app.patient().await;
    }
    let token = &admin.tokens.access;
    let res = app.get_as("/v1/admin/audit?action=login&limit=2", token).await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next: Value = app
        .get_as(
            &format!("/v1/admin/audit?action=login&limit=2&cursor={cursor}"),
            token,
        )
        .await
        .json()
        .await
        .unwrap();
    let first_ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let next_ids: Vec<i64> = next["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(
        next_ids.iter().all(|id| *id < first_ids[1]),
        "pages are newest first and do not overlap"
    );

    let res = app.get_as("/v1/admin/audit?pateint=x", token).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app.get_as("/v1/admin/audit?since=yesterday", token).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(&support::problem(res).await), "validation-failed");

    let reads = events(&app, token, &format!("action=read&actor={}", admin.id)).await;
    assert!(
        reads.iter().any(|e| e["resource"]["type"] == "audit_log"),
        "reading the log is audited"
    );
}

#[tokio::test]
async fn the_application_cannot_update_delete_or_truncate_the_log() {
    // A sealed log with a checkpoint; then the application's own pool (the runtime
    // role, which owns nothing) tries to change it, and the owner tries too.
    let app = sealed_log(5).await;
    let mut conn = app.db.connect();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM audit_checkpoints"), 1);
    let rewrites = [
        "UPDATE audit_events SET action = 'read'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events CASCADE",
        "UPDATE audit_chain SET seq = seq + 100",
        "UPDATE audit_chain SET hash = sha256(hash)",
        "DELETE FROM audit_chain",
        "TRUNCATE audit_chain",
        "UPDATE audit_checkpoints SET size = size + 1",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
    ];
    let state = app.state.clone();
    tokio::task::spawn_blocking(move || {
        let mut pooled = state.db.get_blocking().unwrap();
        let conn: &mut diesel::PgConnection = &mut pooled;
        let refused = |conn: &mut diesel::PgConnection, sql: &str| {
            let err = diesel::sql_query(sql).execute(conn).unwrap_err().to_string();
            assert!(
                err.contains("permission denied") || err.contains("must be owner"),
                "{sql} was allowed or failed for another reason: {err}"
            );
        };
        for sql in rewrites {
            refused(conn, sql);
        }
        // Nor can it switch the triggers off, drop them, or take the tables over.
        for table in ["audit_events", "audit_chain", "audit_checkpoints"] {
            refused(conn, &format!("ALTER TABLE {table} DISABLE TRIGGER ALL"));
            refused(
                conn,
                &format!("ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"),
            );
            refused(conn, &format!("DROP TRIGGER {table}_append_only ON {table}"));
            refused(conn, &format!("ALTER TABLE {table} OWNER TO CURRENT_USER"));
        }
        refused(conn, "DROP FUNCTION audit_append_only() CASCADE");
        refused(conn, "CREATE TABLE audit_events_copy (id bigint)");
        refused(conn, "UPDATE __diesel_schema_migrations SET run_on = now()");
        // What it must do, it can: append.
        diesel::sql_query(
            "INSERT INTO audit_events (actor_kind, action, resource_type, outcome, purpose) \
             VALUES ('system', 'execute', 'probe', 'success', 'system_administration')",
        )
        .execute(conn)
        .expect("the runtime role appends to the log");
    })
    .await
    .unwrap();
    // The owner is held by the triggers.
    for sql in rewrites {
        let err = diesel::sql_query(sql).execute(&mut conn).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql} as the owner: {err}");
    }
    assert!(verify(&app).is_ok());
}

#[tokio::test]
async fn thirty_two_concurrent_writers_land_in_one_gapless_chain() {
    let app = TestApp::spawn().await;
    let db_url = app.db.url.clone();
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let url = db_url.clone();
            std::thread::spawn(move || {
                use diesel::Connection;
                let mut conn = PgConnection::establish(&url).unwrap();
                for _ in 0..50 {
                    // Ten events a transaction, as a busy feature would write them.
                    conn.transaction(|conn| {
                        write_events(conn, 10);
                        Ok::<_, diesel::result::Error>(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    wait_sealed(&app).await;
    let mut conn = app.db.connect();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM audit_events WHERE action = 'execute'"
        ),
        16_000
    );
    let total = count(&mut conn, "SELECT count(*) AS n FROM audit_events");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM audit_chain"),
        total,
        "every event is sealed"
    );
    assert_eq!(
        count(&mut conn, "SELECT max(seq) AS n FROM audit_chain"),
        total,
        "no holes"
    );
    assert_eq!(count(&mut conn, "SELECT min(seq) AS n FROM audit_chain"), 1);
    let report = verify(&app).unwrap();
    assert_eq!(report.summary.entries, total as u64);
}

#[tokio::test]
async fn an_intact_log_verifies_against_its_checkpoints() {
    let app = sealed_log(40).await;
    let report = verify(&app).unwrap();
    assert_eq!(report.summary.entries, 40);
    assert_eq!(
        report.latest_checkpoint,
        Some(40),
        "stopping the server checkpoints the end"
    );
    assert!(report.summary.checkpoints_matched >= 1);
    let lines = std::fs::read_to_string(app.checkpoint_file()).unwrap();
    assert!(lines.lines().last().unwrap().contains("\"size\":40"));
}

#[tokio::test]
async fn an_edited_row_is_caught_at_its_sequence_number() {
    let app = sealed_log(20).await;
    tamper(
        &app,
        "UPDATE audit_events SET action = 'delete' WHERE id = (SELECT event_id FROM audit_chain WHERE seq = 7)",
    );
    assert_eq!(finding(&app), (7, Tamper::Edited));
}

#[tokio::test]
async fn a_deleted_row_is_caught_even_when_the_gap_is_closed() {
    let app = sealed_log(20).await;
    tamper(
        &app,
        "DELETE FROM audit_events WHERE id = (SELECT event_id FROM audit_chain WHERE seq = 7);
         DELETE FROM audit_chain WHERE seq = 7",
    );
    assert_eq!(finding(&app), (7, Tamper::Deleted));
    tamper(
        &app,
        "UPDATE audit_chain SET seq = seq + 1000 WHERE seq > 7;
         UPDATE audit_chain SET seq = seq - 1001 WHERE seq > 1000",
    );
    assert_eq!(finding(&app), (7, Tamper::Deleted));
}

#[tokio::test]
async fn an_inserted_row_is_caught() {
    let app = sealed_log(20).await;
    tamper(
        &app,
        "UPDATE audit_chain SET seq = seq + 1000 WHERE seq >= 7;
         UPDATE audit_chain SET seq = seq - 999 WHERE seq >= 1007;
         WITH fake AS (
             INSERT INTO audit_events (actor_kind, action, resource_type, outcome, purpose)
             VALUES ('anonymous', 'read', 'patient', 'success', 'TREAT') RETURNING id)
         INSERT INTO audit_chain (seq, event_id, prev_hash, hash)
             SELECT 7, fake.id, c.prev_hash, c.hash FROM fake, audit_chain c WHERE c.seq = 8",
    );
    assert_eq!(finding(&app), (7, Tamper::Inserted));
}

#[tokio::test]
async fn reordered_rows_are_caught() {
    let app = sealed_log(20).await;
    tamper(
        &app,
        "UPDATE audit_chain SET seq = 1000 WHERE seq = 7;
         UPDATE audit_chain SET seq = 7 WHERE seq = 8;
         UPDATE audit_chain SET seq = 8 WHERE seq = 1000",
    );
    assert_eq!(finding(&app), (7, Tamper::Reordered));
}

#[tokio::test]
async fn a_cut_tail_is_caught_by_the_checkpoint() {
    let app = sealed_log(20).await;
    tamper(
        &app,
        "DELETE FROM audit_events WHERE id IN (SELECT event_id FROM audit_chain WHERE seq > 15);
         DELETE FROM audit_chain WHERE seq > 15",
    );
    assert_eq!(finding(&app), (16, Tamper::Truncated));
}

#[tokio::test]
async fn a_database_rolled_back_to_an_earlier_state_is_caught_by_the_external_checkpoints() {
    let app = sealed_log(20).await;
    // What a restore from an older backup looks like: later rows and later checkpoints gone.
    tamper(
        &app,
        "DELETE FROM audit_events WHERE id IN (SELECT event_id FROM audit_chain WHERE seq > 15);
         DELETE FROM audit_chain WHERE seq > 15;
         DELETE FROM audit_checkpoints WHERE size > 15",
    );
    // No checkpoint before the one it contradicts remains, so nothing is vouched for.
    assert_eq!(finding(&app), (1, Tamper::RolledBack));
    // Without the external file the database alone looks intact: that is why it exists.
    let alone = carewire::audit::verification::verify_database(
        &mut app.db.connect(),
        carewire::audit::verification::Readers::One,
        &[signer().verifying_key()],
        Vec::new(),
        None,
        |_, _| {},
    )
    .unwrap();
    assert!(alone.is_ok());
}

#[tokio::test]
async fn values_the_decoder_cannot_read_are_tampering_at_their_entry() {
    let app = sealed_log(20).await;
    let at = |seq: u64| format!("(SELECT event_id FROM audit_chain WHERE seq = {seq})");
    tamper(
        &app,
        &format!(
            "UPDATE audit_events SET recorded_at = 'infinity' WHERE id = {}",
            at(9)
        ),
    );
    assert_eq!(finding(&app), (9, Tamper::Edited));
    // NULLs where the schema forbids them, once someone has dropped the constraint.
    tamper(
        &app,
        &format!(
            "ALTER TABLE audit_events ALTER COLUMN action DROP NOT NULL;
             UPDATE audit_events SET action = NULL WHERE id = {}",
            at(7)
        ),
    );
    assert_eq!(finding(&app), (7, Tamper::Edited));
    tamper(
        &app,
        "ALTER TABLE audit_chain ALTER COLUMN prev_hash DROP NOT NULL;
         UPDATE audit_chain SET prev_hash = NULL WHERE seq = 5",
    );
    assert_eq!(finding(&app), (5, Tamper::Edited));
    // The event gone, its chain entry left behind.
    tamper(&app, &format!("DELETE FROM audit_events WHERE id = {}", at(3)));
    assert_eq!(finding(&app), (3, Tamper::Deleted));
    // A checkpoint that cannot be read is not one anybody signed.
    tamper(&app, "UPDATE audit_checkpoints SET signed_at = '-infinity'");
    assert_eq!(finding(&app), (20, Tamper::ForgedCheckpoint));
}

#[tokio::test]
async fn an_inserted_row_with_a_correct_hash_of_its_own_is_named_where_it_was_put() {
    use carewire_audit::chain::Head;
    use carewire_audit::encoding::SealedEvent;
    let app = sealed_log(20).await;
    #[derive(diesel::QueryableByName)]
    struct H {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        hash: Vec<u8>,
    }
    let h14: Vec<u8> = diesel::sql_query("SELECT hash FROM audit_chain WHERE seq = 14")
        .get_result::<H>(&mut app.db.connect())
        .unwrap()
        .hash;
    // The forger computes a hash for their event that follows entry 14 correctly.
    let recorded_at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let forged = SealedEvent {
        seq: 15,
        recorded_at,
        event: AuditEvent::new(
            Actor::Anonymous,
            action::READ,
            resource::PATIENT,
            purpose::TREATMENT,
        ),
    };
    let mut head = Head {
        size: 14,
        hash: h14.try_into().unwrap(),
    };
    let (prev, hash) = head.append(&forged);
    tamper(
        &app,
        &format!(
            "UPDATE audit_chain SET seq = seq + 1000 WHERE seq >= 15;
             UPDATE audit_chain SET seq = seq - 999 WHERE seq >= 1015;
             WITH fake AS (
                 INSERT INTO audit_events (recorded_at, actor_kind, action, resource_type, outcome, purpose)
                 VALUES ('2026-01-01T00:00:00Z', 'anonymous', 'read', 'patient', 'success', 'TREAT') RETURNING id)
             INSERT INTO audit_chain (seq, event_id, prev_hash, hash)
                 SELECT 15, fake.id, '\\x{}', '\\x{}' FROM fake",
            hex::encode(prev),
            hex::encode(hash)
        ),
    );
    assert_eq!(finding(&app), (15, Tamper::Inserted));
}

#[tokio::test]
async fn a_log_restored_to_a_checkpoint_and_grown_again_is_named_after_the_last_one_that_still_matches() {
    // Three runs of the server on one database and one checkpoint file: 10 events
    // (checkpoint 10), 10 more (checkpoint 20); then the database is put back to its
    // state at 10 and a third run writes 5 new events and checkpoints them (15).
    let db = support::TestDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit-checkpoints.jsonl");
    let run = |n: usize| {
        let db = db.shared();
        let file = file.display().to_string();
        async move {
            let mut app = TestApp::builder()
                .database(db)
                .setting("CAREWIRE_AUDIT_CHECKPOINT_FILE", &file)
                .spawn()
                .await;
            write_events(&mut app.db.connect(), n);
            wait_sealed(&app).await;
            app.shutdown().await;
            app
        }
    };
    run(10).await;
    run(10).await;
    let app = run(0).await;
    tamper(
        &app,
        "DELETE FROM audit_events WHERE id IN (SELECT event_id FROM audit_chain WHERE seq > 10);
         DELETE FROM audit_chain WHERE seq > 10;
         DELETE FROM audit_checkpoints WHERE size > 10",
    );
    let app = run(5).await;
    let sizes: Vec<u64> = carewire::audit::verification::read_checkpoint_file(&file)
        .unwrap()
        .iter()
        .map(|c| c.checkpoint.size)
        .collect();
    assert_eq!(sizes, [10, 20, 15], "the regrown log was checkpointed again");
    assert_eq!(finding(&app), (11, Tamper::RolledBack));
}

#[tokio::test]
async fn sealing_goes_on_while_another_database_holds_a_transaction_open() {
    let app = TestApp::spawn().await;
    let elsewhere = support::TestDatabase::create();
    let mut idle = elsewhere.connect();
    diesel::sql_query("BEGIN").execute(&mut idle).unwrap();
    diesel::sql_query("SELECT pg_current_xact_id()")
        .execute(&mut idle)
        .unwrap();
    write_events(&mut app.db.connect(), 5);
    wait_sealed(&app).await;
    diesel::sql_query("ROLLBACK").execute(&mut idle).unwrap();
}

#[tokio::test]
async fn a_stop_that_cannot_seal_everything_says_so_and_the_next_run_seals_it() {
    support::capture_logs();
    let mut app = TestApp::spawn().await;
    write_events(&mut app.db.connect(), 3);
    wait_sealed(&app).await;
    // A transaction here (a stuck request of a server, as the runtime role) that took
    // an id before the next events and stays open: sealing past it could put its
    // event after later ones, so it must wait.
    let mut open = <PgConnection as diesel::Connection>::establish(&app.db.runtime_url()).unwrap();
    diesel::sql_query("BEGIN").execute(&mut open).unwrap();
    diesel::sql_query("SELECT pg_current_xact_id()")
        .execute(&mut open)
        .unwrap();
    write_events(&mut app.db.connect(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        carewire_audit::store::unsealed_count(&mut app.db.connect()).unwrap(),
        2
    );
    app.shutdown().await;
    let logs = support::captured_logs();
    assert!(
        logs.contains("STOPPING WITH 2 COMMITTED AUDIT EVENTS UNSEALED")
            && logs.contains("idle in transaction")
            && logs.contains("role cw_app_"),
        "{logs}"
    );
    diesel::sql_query("COMMIT").execute(&mut open).unwrap();
    let next = TestApp::builder().database(app.db.shared()).spawn().await;
    wait_sealed(&next).await;
    assert_eq!(verify(&next).unwrap().summary.entries, 5);
}

#[tokio::test]
async fn the_sealer_stops_when_sealed_rows_change_underneath_it() {
    let app = TestApp::spawn().await;
    write_events(&mut app.db.connect(), 5);
    wait_sealed(&app).await;
    // Someone rewrites the newest sealed entry and recomputes a hash for it, hoping
    // the next checkpoint will sign their version.
    tamper(
        &app,
        "UPDATE audit_events SET action = 'delete' WHERE id = (SELECT event_id FROM audit_chain ORDER BY seq DESC LIMIT 1);
         UPDATE audit_chain SET hash = sha256(hash) WHERE seq = (SELECT max(seq) FROM audit_chain)",
    );
    write_events(&mut app.db.connect(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = app.db.connect();
    assert_eq!(
        carewire_audit::store::unsealed_count(&mut conn).unwrap(),
        1,
        "the sealer kept sealing over a changed head"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM audit_checkpoints"), 0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("audit_tamper_detected_total"), "{metrics}");
}

#[tokio::test]
async fn an_audit_write_that_fails_makes_the_operation_fail() {
    let app = TestApp::spawn().await;
    let email = unique_email("unlucky");
    app.register(&email).await;
    diesel::sql_query(
        "CREATE FUNCTION fail_login_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.action = 'login' THEN RAISE EXCEPTION 'injected audit failure'; END IF; RETURN NEW; END $$",
    )
    .execute(&mut app.db.connect())
    .unwrap();
    diesel::sql_query(
        "CREATE TRIGGER zz_fail_login_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION fail_login_audit()",
    )
    .execute(&mut app.db.connect())
    .unwrap();

    let res = app.login(&email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = support::problem(res).await;
    assert!(!body.to_string().contains("injected"), "internals leaked: {body}");
    let mut conn = app.db.connect();
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM auth_sessions"),
        0,
        "no session was started"
    );
}

mod binary {
    //! The `carewire audit` commands and a crash of the real server.

    use std::process::{Command, Stdio};

    use super::*;

    fn carewire(app: &TestApp) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_carewire"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db.url)
            .env("CAREWIRE_JWT_SECRET", support::JWT_SECRET)
            .env("CAREWIRE_KEK", support::KEK)
            .env("CAREWIRE_AUDIT_SIGNING_KEY", support::AUDIT_SIGNING_KEY)
            .env("CAREWIRE_AUDIT_CHECKPOINT_FILE", app.checkpoint_file())
            .env("CAREWIRE_DATA_DIR", app.data_dir())
            .env("CAREWIRE_LOG", "warn");
        cmd
    }

    #[tokio::test]
    async fn verify_exits_0_when_intact_and_1_naming_the_tampering() {
        let app = sealed_log(12).await;
        let output = carewire(&app).args(["audit", "verify"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("intact: 12 entries"), "{stdout}");

        tamper(
            &app,
            "UPDATE audit_events SET purpose = 'ETREAT' WHERE id = (SELECT event_id FROM audit_chain WHERE seq = 5)",
        );
        let output = carewire(&app).args(["audit", "verify"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("edited at sequence number 5"), "{stdout}");
    }

    /// `carewire audit verify` as an outside auditor runs it: nothing but the
    /// database URL (a read-only role), the checkpoint file and the arguments.
    fn auditor(url: &str, data_dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_carewire"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .env("CAREWIRE_DATA_DIR", data_dir)
            .env("CAREWIRE_LOG", "warn")
            .args(["audit", "verify"]);
        cmd
    }

    fn run(cmd: &mut Command) -> (Option<i32>, String) {
        let output = cmd.output().unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    const READ_ONLY_AUDITOR: &str = "GRANT SELECT ON audit_events, audit_chain, audit_checkpoints TO {role};
         ALTER ROLE {role} SET default_transaction_read_only = on";

    #[tokio::test]
    async fn an_auditor_verifies_with_a_read_only_role_a_checkpoint_file_and_a_public_key() {
        let app = sealed_log(8).await;
        let role = support::TestRole::create(&app.db, "auditor", READ_ONLY_AUDITOR);
        let url = role.url(&app.db.url);
        let desk = tempfile::tempdir().unwrap();
        let file = app.checkpoint_file().display().to_string();
        let public = carewire::audit::trust::format_public_key(&signer().verifying_key());

        let (code, out) =
            run(auditor(&url, desk.path()).args(["--checkpoints", &file, "--trusted-key", &public]));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("intact: 8 entries"), "{out}");
        assert!(out.contains("trusted keys:"), "{out}");
        // The key file the server published beside its checkpoints will do as well.
        let key_file = carewire::audit::trust::key_file_for(&app.checkpoint_file());
        assert!(key_file.exists());
        let (code, out) = run(auditor(&url, desk.path()).args(["--checkpoints", &file]));
        assert_eq!(code, Some(0), "{out}");
        assert!(
            std::fs::read_dir(desk.path()).unwrap().next().is_none(),
            "verify wrote into its data folder (a key?)"
        );

        // Someone else's key vouches for nothing: the checkpoints are not trusted.
        let stranger =
            carewire::audit::trust::format_public_key(&CheckpointSigner::from_seed(&[7; 32]).verifying_key());
        let (code, out) =
            run(auditor(&url, desk.path()).args(["--checkpoints", &file, "--trusted-key", &stranger]));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("forged checkpoint"), "{out}");

        // The role really is read-only for the log.
        let mut conn = <diesel::pg::PgConnection as diesel::Connection>::establish(&url).unwrap();
        let err = diesel::sql_query(
            "INSERT INTO audit_checkpoints (size, head, signed_at, key_id, signature) \
                                     VALUES (99, '\\x00', now(), 'x', '\\x00')",
        )
        .execute(&mut conn)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("read-only") || err.contains("permission denied"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn verify_exits_2_when_it_cannot_tell() {
        let app = sealed_log(4).await;
        let desk = tempfile::tempdir().unwrap();
        let file = app.checkpoint_file().display().to_string();
        let public = carewire::audit::trust::format_public_key(&signer().verifying_key());
        let cases: Vec<(&str, Command, &str)> = vec![
            (
                "no checkpoint file",
                {
                    let mut cmd = auditor(&app.db.url, desk.path());
                    cmd.args([
                        "--checkpoints",
                        "/nonexistent/checkpoints.jsonl",
                        "--trusted-key",
                        &public,
                    ]);
                    cmd
                },
                "no external checkpoint file",
            ),
            (
                "no trusted key",
                {
                    let mut cmd = auditor(&app.db.url, desk.path());
                    cmd.args([
                        "--checkpoints",
                        &file,
                        "--trusted-key-file",
                        "/nonexistent/keys.jsonl",
                    ]);
                    cmd
                },
                "no trusted public key",
            ),
            (
                "no database",
                {
                    let mut cmd = auditor("postgres://postgres@127.0.0.1:1/none", desk.path());
                    cmd.args(["--checkpoints", &file, "--trusted-key", &public]);
                    cmd
                },
                "cannot connect",
            ),
            (
                "an unreadable checkpoint file",
                {
                    let bad = desk.path().join("bad.jsonl");
                    std::fs::write(&bad, "not json\n").unwrap();
                    let mut cmd = auditor(&app.db.url, desk.path());
                    cmd.args(["--checkpoints", bad.to_str().unwrap(), "--trusted-key", &public]);
                    cmd
                },
                "is not a checkpoint",
            ),
        ];
        for (case, mut cmd, says) in cases {
            let (code, out) = run(&mut cmd);
            assert_eq!(code, Some(2), "{case}: {out}");
            assert!(
                out.contains("COULD NOT VERIFY") && out.contains(says),
                "{case}: {out}"
            );
        }
        // Without the file only by the operator's explicit choice.
        let (code, out) = run(auditor(&app.db.url, desk.path()).args([
            "--no-external-checkpoints",
            "--trusted-key",
            &public,
        ]));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("--no-external-checkpoints"), "{out}");
        // A value the decoder cannot read is tampering (1), not a crash (2).
        tamper(
            &app,
            "UPDATE audit_events SET recorded_at = 'infinity' WHERE id = (SELECT event_id FROM audit_chain WHERE seq = 2)",
        );
        let (code, out) =
            run(auditor(&app.db.url, desk.path()).args(["--checkpoints", &file, "--trusted-key", &public]));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("edited at sequence number 2"), "{out}");
    }

    #[tokio::test]
    async fn the_public_key_command_prints_what_verify_trusts() {
        let app = sealed_log(1).await;
        let output = carewire(&app).args(["audit", "public-key"]).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert_eq!(
            printed,
            carewire::audit::trust::format_public_key(&signer().verifying_key())
        );
        // It needs no database: without DATABASE_URL it starts no cluster (none could
        // start here: no PostgreSQL binaries) and leaves the data folder as it was.
        let desk = tempfile::tempdir().unwrap();
        let no_binaries = tempfile::tempdir().unwrap();
        let output = carewire(&app)
            .env_remove("DATABASE_URL")
            .env("CAREWIRE_DATA_DIR", desk.path())
            .env("CAREWIRE_PG_BIN_DIR", no_binaries.path())
            .args(["audit", "public-key"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), printed);
        assert_eq!(std::fs::read_dir(desk.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn export_writes_jsonl_and_fhir_and_is_itself_recorded() {
        let app = sealed_log(3).await;
        let output = carewire(&app)
            .args(["audit", "export", "--format", "jsonl"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["action"], "execute");

        let output = carewire(&app)
            .args(["audit", "export", "--format", "fhir", "--since", "2000-01-01"])
            .output()
            .unwrap();
        let fhir: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(fhir.len(), 4, "the first export is now in the log too");
        assert!(
            fhir.iter()
                .all(|r| r["resourceType"] == "AuditEvent" && r["action"] == "E")
        );
        assert!(
            fhir[3]["entity"][0]["detail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["type"] == "exported")
        );

        let output = carewire(&app)
            .args(["audit", "export", "--until", "2000-01-01"])
            .output()
            .unwrap();
        assert!(output.stdout.is_empty(), "nothing was recorded before 2000");
    }

    #[tokio::test]
    async fn killing_the_server_right_after_a_commit_loses_nothing() {
        let app = sealed_log(0).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let serve = |app: &TestApp| {
            carewire(app)
                .arg("serve")
                .env("CAREWIRE_LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let wait_ready = || async {
            for _ in 0..300 {
                if let Ok(res) = client.get(format!("{base}/readyz")).send().await
                    && res.status() == StatusCode::OK
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("carewire did not become ready");
        };

        let mut first = serve(&app);
        wait_ready().await;
        let email = unique_email("crash");
        let res = client
            .post(format!("{base}/v1/auth/register"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        // The commit is done (we have the answer); kill before any sealing pass can run.
        first.kill().unwrap();
        first.wait().unwrap();

        let mut second = serve(&app);
        wait_ready().await;
        wait_sealed(&app).await;
        let status = Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        second.wait().unwrap();

        let mut conn = app.db.connect();
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM audit_events WHERE action = 'create' AND resource_type = 'account'"
            ),
            1
        );
        let output = carewire(&app).args(["audit", "verify"]).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

#[tokio::test]
async fn the_last_entrys_event_deleted_is_deleted_at_that_entry() {
    // Verification reads as far as the chain goes, not as far as entries still have
    // their events: the one left without its event is the finding.
    let app = sealed_log(6).await;
    tamper(
        &app,
        "DELETE FROM audit_events WHERE id = (SELECT event_id FROM audit_chain ORDER BY seq DESC LIMIT 1)",
    );
    let last = count(&mut app.db.connect(), "SELECT max(seq) AS n FROM audit_chain") as u64;
    assert_eq!(finding(&app), (last, Tamper::Deleted));
}
