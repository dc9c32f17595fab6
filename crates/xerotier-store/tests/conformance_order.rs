//! The database's order of events and audit records (`seq`), on both backends: records are
//! listed and resumed in the order they committed, whatever their ids say (ids carry the
//! writing replica's clock), and a reader's cursor never passes a record that commits later.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
// A test deadline decides nothing in the code under test.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::Connection;
use xerotier_store::{
    AgentEvent, AuditEntry, AuditFilter, EVENTS_CHANNEL, Notice, Outcome, PageRequest, Sequenced,
    Store,
};
use xerotier_testkit::{TestDb, per_backend};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn event(id: &str, agent_id: &str) -> AgentEvent {
    AgentEvent {
        id: id.into(),
        agent_id: agent_id.into(),
        at: 10,
        event_type: "exec_resumed".into(),
        request_id: None,
        details: None,
    }
}

fn audit(id: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1_000,
        actor_key_id: Some("key_admin".into()),
        actor_name: None,
        action: "agent.resume_exec".into(),
        target_type: Some("agent".into()),
        target_id: Some("agt_1".into()),
        target_name: None,
        reason: None,
        request_id: None,
        correlation_id: None,
        outcome: Outcome::Denied.as_str().into(),
        client_addr: None,
        details: None,
    }
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|item| id(item).to_string()).collect()
}

/// Every event of `agent_id`, walking pages of `limit` by their `next_after` id cursor.
async fn walk_events(store: &Store, agent_id: &str, limit: u32) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_events(agent_id, &PageRequest { limit, after }).await.unwrap();
        seen.extend(ids(&page.items, |e| &e.id));
        if !page.has_more {
            return seen;
        }
        after = page.items.last().map(|e| e.id.clone());
    }
}

// Ids made by clocks that disagree: written in this order, they sort in the reverse one.
const WRITTEN: [&str; 5] = ["evt_9", "evt_7", "evt_5", "evt_3", "evt_1"];

per_backend!(events_are_listed_in_commit_order_not_id_order, open, |db, store| {
    for id in WRITTEN {
        store.append_event(&event(id, "agt_1")).await.unwrap();
    }
    store.append_event(&event("evt_0", "agt_other")).await.unwrap();
    assert_eq!(walk_events(&store, "agt_1", 500).await, WRITTEN, "{}", db.backend);
    // Pages of two, each resumed after the previous page's last id: exact, nothing skipped.
    assert_eq!(walk_events(&store, "agt_1", 2).await, WRITTEN, "{}", db.backend);
    // Each id stands for its place; a stream resumes right after it.
    let mut previous = 0;
    for id in WRITTEN {
        let seq = store.event_seq(Some(id)).await.unwrap();
        assert!(seq > previous, "{}: {id} numbered {seq} after {previous}", db.backend);
        previous = seq;
    }
    let from_evt_7 = store.event_seq(Some("evt_7")).await.unwrap();
    let rest = store.events_after("agt_1", from_evt_7, 100).await.unwrap();
    assert_eq!(ids(&rest, |e| &e.record.id), ["evt_5", "evt_3", "evt_1"], "{}", db.backend);
    assert!(rest.windows(2).all(|w| w[0].seq < w[1].seq), "{rest:?}");
    assert_eq!(store.event_seq(None).await.unwrap(), 0);
    let page = PageRequest { limit: 10, after: Some("evt_3".into()) };
    assert_eq!(ids(&store.list_events("agt_1", &page).await.unwrap().items, |e| &e.id), ["evt_1"]);
});

per_backend!(a_cursor_that_names_no_event_resumes_after_the_ids_before_it, open, |db, store| {
    for id in ["evt_1", "evt_3", "evt_5"] {
        store.append_event(&event(id, "agt_1")).await.unwrap();
    }
    // Not an id this store gave out: it resumes after the last event whose id sorts before it.
    let page = PageRequest { limit: 10, after: Some("evt_4".into()) };
    let items = store.list_events("agt_1", &page).await.unwrap().items;
    assert_eq!(ids(&items, |e| &e.id), ["evt_5"], "{}", db.backend);
    let seq = store.event_seq(Some("evt_4")).await.unwrap();
    assert_eq!(seq, store.event_seq(Some("evt_3")).await.unwrap(), "{}", db.backend);
});

per_backend!(audit_records_are_listed_in_commit_order_not_id_order, open, |db, store| {
    let written = ["aud_9", "aud_7", "aud_5", "aud_3", "aud_1"];
    for id in written {
        store.record_audit(&audit(id)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = PageRequest { limit: 2, after };
        let slice = store.list_audit(&AuditFilter::default(), &page).await.unwrap();
        seen.extend(ids(&slice.items, |e| &e.id));
        if !slice.has_more {
            break;
        }
        after = slice.items.last().map(|e| e.id.clone());
    }
    assert_eq!(seen, written, "{}", db.backend);
});

// The hazard late numbering exists for: a transaction that inserted first but commits last.
// A reader that already moved past what committed meanwhile must still be shown it.
per_backend!(a_reader_never_passes_an_event_that_commits_later, open, |db, store| {
    let mut held = sqlx::AnyConnection::connect(db.url()).await.unwrap();
    if db.backend == "sqlite" {
        // SQLite: one writer at a time, so the held transaction keeps the other writer waiting
        // and numbers its row as it inserts it.
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut held).await.unwrap();
        sqlx::query(
            "INSERT INTO agent_events (id, agent_id, at, event_type, seq)
             VALUES ('evt_0held', 'agt_1', 1, 'held', (SELECT COALESCE(MAX(seq), 0) + 1 FROM agent_events))",
        )
        .execute(&mut held)
        .await
        .unwrap();
    } else {
        sqlx::raw_sql("BEGIN").execute(&mut held).await.unwrap();
        sqlx::query(
            "INSERT INTO agent_events (id, agent_id, at, event_type)
             VALUES ('evt_0held', 'agt_1', 1, 'held')",
        )
        .execute(&mut held)
        .await
        .unwrap();
    }
    let mut writer = Some({
        let store = store.clone();
        tokio::spawn(async move { store.append_event(&event("evt_9late", "agt_1")).await })
    });
    if db.backend == "postgres" {
        // Nothing holds it up on PostgreSQL: it commits while the first is still open.
        writer.take().unwrap().await.unwrap().unwrap();
    }
    let first: Vec<Sequenced<AgentEvent>> = store.events_after("agt_1", 0, 100).await.unwrap();
    let cursor = first.last().map_or(0, |e| e.seq);
    sqlx::raw_sql("COMMIT").execute(&mut held).await.unwrap();
    if let Some(writer) = writer {
        writer.await.unwrap().unwrap();
    }
    let second = store.events_after("agt_1", cursor, 100).await.unwrap();
    assert!(second.iter().all(|e| e.seq > cursor), "{}: {second:?}", db.backend);
    let mut seen = ids(&first, |e| &e.record.id);
    seen.extend(ids(&second, |e| &e.record.id));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, ["evt_0held", "evt_9late"], "{}: every event once: {seen:?}", db.backend);
    // The listing agrees with what the reader was shown, in that order.
    assert_eq!(walk_events(&store, "agt_1", 1).await, seen, "{}", db.backend);
    if db.backend == "postgres" {
        assert_eq!(seen, ["evt_9late", "evt_0held"], "numbered as they became visible");
    }
});

// Several writers at once and a reader following them: the reader sees every event exactly
// once, in increasing `seq`, and each writer's events in the order it committed them.
per_backend!(concurrent_writers_and_a_following_reader_agree, open, |db, store| {
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    // Ids that disagree with the commit order on purpose: descending per writer.
                    let id = format!("evt_{w}_{:03}", 999 - i);
                    store.append_event(&event(&id, "agt_1")).await.unwrap();
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<Sequenced<AgentEvent>> = Vec::new();
    let mut cursor = 0;
    while seen.len() < WRITERS * EACH {
        assert!(Instant::now() < deadline, "{}: saw {} events", db.backend, seen.len());
        let batch = store.events_after("agt_1", cursor, 7).await.unwrap();
        if let Some(last) = batch.last() {
            cursor = last.seq;
        } else {
            tokio::task::yield_now().await;
        }
        seen.extend(batch);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(store.events_after("agt_1", cursor, 7).await.unwrap().is_empty(), "{}", db.backend);
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq), "{}: increasing seq", db.backend);
    let unique: HashSet<&str> = seen.iter().map(|e| e.record.id.as_str()).collect();
    assert_eq!(unique.len(), WRITERS * EACH, "{}: each event once", db.backend);
    for w in 0..WRITERS {
        let mine: Vec<&str> = seen
            .iter()
            .map(|e| e.record.id.as_str())
            .filter(|id| id.starts_with(&format!("evt_{w}_")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("evt_{w}_{:03}", 999 - i)).collect();
        assert_eq!(mine, expected, "{}: writer {w} in its commit order", db.backend);
    }
    assert_eq!(
        walk_events(&store, "agt_1", 9).await,
        ids(&seen, |e| &e.record.id),
        "{}: the listing is the order the reader saw",
        db.backend
    );
});

// On PostgreSQL an event's commit notifies `xerotier_events` with its agent: replicas wake that
// agent's live streams at once. A rolled-back event notifies nobody. SQLite has no listeners.
per_backend!(an_event_commit_notifies_its_agent, open, |db, store| {
    let Some(mut notifications) = store.listen(&[EVENTS_CHANNEL]).await.unwrap() else {
        assert_eq!(db.backend, "sqlite");
        return;
    };
    store.append_event(&event("evt_1", "agt_notified")).await.unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), notifications.next())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert_eq!(
        notice,
        Notice::Received { channel: EVENTS_CHANNEL.into(), payload: "agt_notified".into() }
    );
});

// What committed is numbered by `number_pending` too (a replica's background task), without
// waiting for a reader; a reader then finds it numbered. Nothing is left to number afterwards.
per_backend!(pending_records_are_numbered_without_a_reader, open, |db, store| {
    store.append_event(&event("evt_1", "agt_1")).await.unwrap();
    store.record_audit(&audit("aud_1")).await.unwrap();
    let numbered = store.number_pending().await.unwrap();
    let expected = if db.backend == "postgres" { 2 } else { 0 };
    assert_eq!(numbered, expected, "{}: SQLite numbered them as they were inserted", db.backend);
    assert_eq!(store.number_pending().await.unwrap(), 0, "{}", db.backend);
    assert_eq!(store.event_seq(Some("evt_1")).await.unwrap(), 1, "{}", db.backend);
});
