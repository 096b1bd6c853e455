//! A Rust iii-sdk 0.26.0-rc.4 worker for engine/compat's rust_test.go: it
//! serves the engine's built-in sources through `observe` (the 0.26 SDK has
//! no register_trigger), as iii's Rust docs show.
//!
//! Environment: III_URL (the engine), SRC_PREFIX (unique function ids and
//! names per test), SRC_ROUTE (the HTTP path it serves), SRC_TOPIC (its pubsub
//! topic), SRC_SCOPE (the state scope it reacts to), SRC_CRON (a cron
//! expression; unset: no cron observer), SRC_QUEUE (a durable topic; unset:
//! no queue observer).
//!
//! It prints one line per observer once the engine answered it: `ready
//! <name>` or `rejected <name> <code>`, then `all-answered`. What its targets
//! receive is kept in memory and returned by `<prefix>::events`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iii_sdk::{
    Deliver, Error, IIIClient, InitOptions, ObserverHandle, RegisterFunction, Source,
    register_worker,
};
use serde_json::{Value, json};

type Events = Arc<Mutex<Vec<Value>>>;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// A target that records each input under `kind` and returns `answer`.
fn recorder(iii: &IIIClient, events: &Events, id: String, kind: &'static str) {
    let events = events.clone();
    iii.register_function(
        id,
        RegisterFunction::new(move |input: Value| {
            events
                .lock()
                .unwrap()
                .push(json!({ "kind": kind, "input": input }));
            Ok::<_, Error>(json!({ "ok": true }))
        }),
    );
}

async fn answer(name: &str, handle: &ObserverHandle) -> bool {
    match tokio::time::timeout(Duration::from_secs(20), handle.ready()).await {
        Ok(Ok(())) => {
            println!("ready {name}");
            true
        }
        Ok(Err(err)) => {
            let code = err
                .invocation_error()
                .map(|e| e.code)
                .unwrap_or_else(|| err.to_string());
            println!("rejected {name} {code}");
            false
        }
        Err(_) => {
            println!("rejected {name} TIMEOUT state={:?}", handle.state());
            false
        }
    }
}

#[tokio::main]
async fn main() {
    let url = env("III_URL").unwrap_or_else(|| "ws://127.0.0.1:49134".into());
    let prefix = env("SRC_PREFIX").unwrap_or_else(|| "rs".into());
    let route = env("SRC_ROUTE").unwrap_or_else(|| format!("/{prefix}/hello/:name"));
    let topic = env("SRC_TOPIC").unwrap_or_else(|| format!("{prefix}-topic"));
    let scope = env("SRC_SCOPE").unwrap_or_else(|| format!("{prefix}-scope"));

    let iii = register_worker(&url, InitOptions::default());
    let events: Events = Arc::default();

    // A plain function, called through the engine.
    iii.register_function(
        format!("{prefix}::echo"),
        RegisterFunction::new(|input: Value| Ok::<_, Error>(json!({ "echo": input }))),
    );
    // What the targets received so far.
    {
        let events = events.clone();
        iii.register_function(
            format!("{prefix}::events"),
            RegisterFunction::new(move |_: Value| {
                Ok::<_, Error>(Value::Array(events.lock().unwrap().clone()))
            }),
        );
    }
    // The HTTP route's target: gets the request, returns the response.
    iii.register_function(
        format!("{prefix}::hello"),
        RegisterFunction::new(|req: Value| {
            let name = req["path_params"]["name"].as_str().unwrap_or("nobody");
            Ok::<_, Error>(json!({
                "status_code": 201,
                "headers": { "x-worker": "rust" },
                "body": { "message": format!("hello {name}"), "query": req["query_params"] },
            }))
        }),
    );
    recorder(&iii, &events, format!("{prefix}::on-topic"), "publish");
    recorder(&iii, &events, format!("{prefix}::on-state"), "state");
    recorder(&iii, &events, format!("{prefix}::on-tick"), "cron");
    recorder(&iii, &events, format!("{prefix}::on-queue"), "queue");

    let mut observers = vec![
        (
            "route",
            iii.observe(
                Source::function("http::on-request")
                    .args(json!({ "method": "GET", "path": route })),
                format!("{prefix}::hello"),
            ),
        ),
        (
            "topic",
            iii.observe(
                Source::function("publish")
                    .filters(json!({ "input.topic": { "$eq": topic } }))
                    .deliver(Deliver::Input),
                format!("{prefix}::on-topic"),
            ),
        ),
        (
            "state",
            iii.observe(
                Source::function("state::on-changed")
                    .filters(json!({ "input.scope": { "$eq": scope } }))
                    .deliver(Deliver::Input),
                format!("{prefix}::on-state"),
            ),
        ),
        (
            // The same route for another function: a conflict.
            "taken-route",
            iii.observe(
                Source::function("http::on-request")
                    .args(json!({ "method": "GET", "path": route })),
                format!("{prefix}::echo"),
            ),
        ),
        (
            // Bad args: a route without a path.
            "bad-route",
            iii.observe(
                Source::function("http::on-request").args(json!({ "method": "GET" })),
                format!("{prefix}::hello"),
            ),
        ),
    ];
    if let Some(expression) = env("SRC_CRON") {
        observers.push((
            "cron",
            iii.observe(
                Source::function("cron::on-tick").args(json!({ "expression": expression })),
                format!("{prefix}::on-tick"),
            ),
        ));
    }
    if let Some(queue_topic) = env("SRC_QUEUE") {
        observers.push((
            "queue",
            iii.observe(
                Source::function("queue::on-message").args(json!({ "topic": queue_topic })),
                format!("{prefix}::on-queue"),
            ),
        ));
    }
    for (name, handle) in &observers {
        answer(name, handle).await;
    }
    println!("all-answered");

    // Serve until stdin closes (the test's end) or the process is killed.
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    })
    .await
    .ok();
    iii.shutdown_async().await;
}
