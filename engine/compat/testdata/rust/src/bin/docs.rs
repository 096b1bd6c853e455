//! The examples of the iii-sdk 0.26.0-rc.4 README (the crate's own docs),
//! run one after the other against III_URL, for engine/compat's
//! docs_test.go. Where the README's code does not compile against the
//! crate, the crate wins and the change is noted at the step.
//!
//! Every step prints one line `DOCS <json>`: {"step", "ok", ...what it saw}.
//! Then `DOCS {"step":"done"}`, and the worker serves until stdin closes.
//! The engine it runs against must not host cron::on-tick (the README's
//! hosting example registers it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iii_helpers::stream::UpdateOp;
use iii_sdk::{
    Call, CallAction, CallRequest, Capture, Error, IIIClient, InitOptions, Match, ObserveRejection,
    Observer, ObserverOptions, On, RegisterFunction, Source, register_worker,
};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

fn report(step: &str, fields: Value) {
    let mut line = json!({ "step": step });
    if let (Some(out), Some(add)) = (line.as_object_mut(), fields.as_object()) {
        out.extend(add.clone());
    }
    println!("DOCS {line}");
}

/// A function that records what it gets under `kind`.
fn recorder(iii: &IIIClient, seen: &Seen, id: &str, kind: &'static str) {
    let seen = seen.clone();
    iii.register_function(
        id,
        RegisterFunction::new(move |input: Value| {
            seen.lock()
                .unwrap()
                .push(json!({ "kind": kind, "input": input }));
            Ok::<_, Error>(json!({ "ok": true }))
        }),
    );
}

/// Waits up to 10 s for a record of `kind`.
async fn wait_for(seen: &Seen, kind: &str) -> Option<Value> {
    for _ in 0..200 {
        if let Some(v) = seen.lock().unwrap().iter().find(|v| v["kind"] == kind) {
            return Some(v["input"].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn outcome(r: Result<Value, Error>) -> Value {
    match r {
        Ok(v) => json!({ "ok": true, "result": v }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("III_URL").unwrap_or_else(|_| "ws://127.0.0.1:49134".into());
    let iii = register_worker(&url, InitOptions::default());
    let seen: Seen = Arc::default();

    // Hello World.
    iii.register_function(
        "hello::greet",
        RegisterFunction::new_async(|input: Value| async move {
            let name = input.get("name").and_then(|v| v.as_str()).unwrap_or("world");
            Ok::<_, Error>(json!({ "message": format!("Hello, {name}!") }))
        }),
    );
    let greet_route = iii.observe(
        Source::function("http::on-request").args(json!({ "method": "POST", "path": "/greet" })),
        "hello::greet",
    );
    let ready = greet_route.ready().await;
    let result = iii
        .call(CallRequest::new("hello::greet", json!({ "name": "world" })))
        .await;
    report(
        "hello",
        json!({ "route_ready": ready.is_ok(), "call": outcome(result) }),
    );

    // Registering and calling functions.
    iii.register_function(
        "orders::create",
        RegisterFunction::new_async(|input: Value| async move {
            let item = input["body"]["item"].as_str().unwrap_or("");
            Ok::<_, Error>(json!({ "status_code": 201, "body": { "id": "123", "item": item } }))
        }),
    );
    recorder(&iii, &seen, "analytics::track", "track");
    recorder(&iii, &seen, "orders::process", "process");
    recorder(&iii, &seen, "search::reindex-order", "reindex");
    // Observe a function: every successful call of orders::create.
    let reindex = iii.observe("orders::create", "search::reindex-order");
    let reindex_ready = reindex.ready().await;
    let created = iii
        .call(CallRequest::new(
            "orders::create",
            json!({ "body": { "item": "widget" } }),
        ))
        .await;
    // The README's `CallRequest::new(..).action(CallAction::Void)` does not
    // compile in 0.26.0-rc.4 (no `action` on CallRequest): the struct form.
    let void = iii
        .call(CallRequest {
            action: Some(CallAction::Void),
            ..CallRequest::new("analytics::track", json!({ "event": "page_view" }))
        })
        .await;
    let enqueued = iii
        .call(CallRequest {
            function_id: "orders::process".to_string(),
            payload: json!({ "order_id": "456" }),
            action: Some(CallAction::Enqueue {
                queue: "payments".to_string(),
            }),
            timeout_ms: None,
        })
        .await;
    report(
        "calls",
        json!({
            "create": outcome(created),
            "void": outcome(void),
            "track": wait_for(&seen, "track").await,
            "enqueue": outcome(enqueued),
            "process": wait_for(&seen, "process").await,
            "reindex_ready": reindex_ready.is_ok(),
            "reindex": wait_for(&seen, "reindex").await,
        }),
    );

    // Observing failures with filters, capture and a policy.
    iii.register_function(
        "payments::charge",
        RegisterFunction::new(|input: Value| {
            if input["amount"].as_i64().unwrap_or(0) >= 500 {
                return Err(Error::Handler("card declined".into()));
            }
            Ok(json!({ "charged": input["amount"] }))
        }),
    );
    recorder(&iii, &seen, "alerts::payment-failed", "payment-failed");
    let alerts = iii.observe_with(
        Source::function("payments::charge")
            .on(On::Error)
            .filters(json!({ "input.amount": { "$gte": 500 } }))
            .capture([Capture::Input, Capture::Error, Capture::Caller]),
        "alerts::payment-failed",
        ObserverOptions::default().max_in_flight(4),
    );
    let alerts_ready = alerts.ready().await;
    let small = iii
        .call(CallRequest::new("payments::charge", json!({ "amount": 20 })))
        .await;
    let big = iii
        .call(CallRequest::new("payments::charge", json!({ "amount": 700 })))
        .await;
    report(
        "observe-errors",
        json!({
            "ready": alerts_ready.is_ok(),
            "small": outcome(small),
            "big": outcome(big),
            "alert": wait_for(&seen, "payment-failed").await,
        }),
    );

    // A stable observer id, free again once disposed.
    recorder(&iii, &seen, "orders::consume", "consume");
    let messages = || Source::function("queue::on-message").args(json!({ "topic": "orders" }));
    let consumer = ObserverOptions::default().id("orders-consumer");
    let first = iii.observe_with(messages(), "orders::consume", consumer.clone());
    let first_ready = first.ready().await;
    let disposed = first.dispose().await;
    let again = iii.observe_with(messages(), "orders::consume", consumer);
    let again_ready = again.ready().await;
    let published = iii
        .call(CallRequest::new(
            "iii::durable::publish",
            json!({ "topic": "orders", "data": { "order": 1 } }),
        ))
        .await;
    report(
        "stable-id",
        json!({
            "first_ready": first_ready.is_ok(),
            "disposed": disposed.is_ok(),
            "again_ready": again_ready.as_ref().err().map(|e| e.to_string()),
            "again_state": format!("{:?}", again.state()),
            "publish": outcome(published),
            "consumed": wait_for(&seen, "consume").await,
        }),
    );

    // The engine's own events are functions too.
    recorder(&iii, &seen, "audit::functions-changed", "functions-changed");
    let changes = iii.observe(
        iii_sdk::engine::EngineSources::FUNCTIONS_CHANGED,
        "audit::functions-changed",
    );
    let changes_ready = changes.ready().await;
    iii.register_function(
        "late::fn",
        RegisterFunction::new(|v: Value| Ok::<_, Error>(v)),
    );
    report(
        "engine-sources",
        json!({
            "ready": changes_ready.as_ref().err().map(|e| e.to_string()),
            "event": wait_for(&seen, "functions-changed").await,
        }),
    );

    // Stream operations.
    let set = iii
        .call(CallRequest::new(
            "stream::set",
            json!({
                "stream_name": "users",
                "group_id": "active",
                "item_id": "user-1",
                "data": { "status": "online" },
            }),
        ))
        .await;
    let ops = vec![
        UpdateOp::increment("total", 100),
        UpdateOp::set("status", json!("processing")),
    ];
    let update = iii
        .call(CallRequest::new(
            "stream::update",
            json!({
                "stream_name": "orders",
                "group_id": "user-123",
                "item_id": "order-456",
                "ops": ops,
            }),
        ))
        .await;
    report(
        "streams",
        json!({ "set": outcome(set), "update": outcome(update) }),
    );

    // Hosting an observable function: an event source with an added hook
    // and a match rule by keys. (The README derives CronArgs with schemars;
    // the same schema is given as a value here.)
    let starts: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let starts = starts.clone();
        iii.on_observer_added_for("cron::on-tick", move |obs: Observer| {
            let starts = starts.clone();
            async move {
                let expression = obs.args_value()["expression"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if expression.split_whitespace().count() != 7 {
                    return Err(ObserveRejection::new("INVALID_CRON_EXPRESSION", expression));
                }
                starts.lock().unwrap().push(expression);
                Ok(())
            }
        });
    }
    iii.on_observation_match_for(
        "cron::on-tick",
        Match::keys(
            |obs| obs.args_value()["expression"].as_str().into(),
            |call| call.input["expression"].as_str().into(),
        ),
    );
    let on_tick = iii.register_function(
        "cron::on-tick",
        RegisterFunction::new(|tick: Value| Ok::<_, Error>(tick))
            .args_format_value(json!({
                "type": "object",
                "required": ["expression"],
                "properties": { "expression": { "type": "string" } },
                "additionalProperties": false,
            }))
            .private(),
    );
    recorder(&iii, &seen, "reports::daily-summary", "daily");
    let daily = iii.observe(
        Source::function("cron::on-tick").args(json!({ "expression": "0 0 9 * * * *" })),
        "reports::daily-summary",
    );
    let daily_ready = daily.ready().await;
    let bad = iii.observe(
        Source::function("cron::on-tick").args(json!({ "expression": "* * *" })),
        "reports::daily-summary",
    );
    let bad_ready = bad.ready().await;
    let unknown_arg = iii.observe(
        Source::function("cron::on-tick").args(json!({ "expression": "0 0 9 * * * *", "tz": "UTC" })),
        "reports::daily-summary",
    );
    let unknown_ready = unknown_arg.ready().await;
    let call = Call {
        input: json!({ "expression": "0 0 9 * * * *" }),
        ..Call::default()
    };
    let observed = on_tick.is_observed_for(&call);
    let other = Call {
        input: json!({ "expression": "0 0 10 * * * *" }),
        ..Call::default()
    };
    let observed_other = on_tick.is_observed_for(&other);
    let tick = if observed {
        Some(outcome(
            iii.call(CallRequest::new("cron::on-tick", call.input)).await,
        ))
    } else {
        None
    };
    report(
        "hosting",
        json!({
            "ready": daily_ready.as_ref().err().map(|e| e.to_string()),
            "bad": bad_ready.as_ref().err().map(|e| e.to_string()),
            "unknown_arg": unknown_ready.as_ref().err().map(|e| e.to_string()),
            "started": starts.lock().unwrap().clone(),
            "observed": observed,
            "observed_other": observed_other,
            "tick": tick,
            "delivered": wait_for(&seen, "daily").await,
        }),
    );

    // One observer's own initial state: a call with metadata for_observer
    // that the match hook gives to that observer alone.
    {
        let host = iii.clone();
        iii.on_observer_added_for("tmux::on-changed", move |obs: Observer| {
            let iii = host.clone();
            async move {
                tokio::spawn(async move {
                    if obs.accepted().await.is_ok() {
                        let state = CallRequest::new(
                            "tmux::on-changed",
                            json!({ "session": obs.args_value()["session"], "initial": true }),
                        )
                        .metadata(json!({ "for_observer": obs.id() }));
                        let _ = iii.call(state.action(CallAction::Void)).await;
                    }
                });
                Ok(())
            }
        });
    }
    iii.on_observation_match_for(
        "tmux::on-changed",
        Match::predicate(|obs, call| {
            match call.metadata.as_ref().and_then(|m| m["for_observer"].as_str()) {
                Some(id) => id == obs.id(),
                None => obs.args_value()["session"] == call.input["session"],
            }
        }),
    );
    // The README registers it without args_format, but its observers pass
    // args, and the crate's own docs say a function without args_format
    // takes none (the engine answers INVALID_ARGS): the crate wins.
    iii.register_function(
        "tmux::on-changed",
        RegisterFunction::new(|ev: Value| Ok::<_, Error>(ev))
            .args_format_value(json!({
                "type": "object",
                "required": ["session"],
                "properties": { "session": { "type": "string" } },
            }))
            .private(),
    );
    recorder(&iii, &seen, "ui::s1", "s1");
    recorder(&iii, &seen, "ui::s2", "s2");
    let s1 = iii.observe(
        Source::function("tmux::on-changed").args(json!({ "session": "s1" })),
        "ui::s1",
    );
    let s1_ready = s1.ready().await;
    let s1_initial = wait_for(&seen, "s1").await;
    let s2 = iii.observe(
        Source::function("tmux::on-changed").args(json!({ "session": "s2" })),
        "ui::s2",
    );
    let s2_ready = s2.ready().await;
    let s2_initial = wait_for(&seen, "s2").await;
    let s1_count = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "s1")
        .count();
    report(
        "for-observer",
        json!({
            "ready": [s1_ready.as_ref().err().map(|e| e.to_string()), s2_ready.as_ref().err().map(|e| e.to_string())],
            "s1": s1_initial,
            "s2": s2_initial,
            "s1_count": s1_count,
        }),
    );

    report("done", json!({}));
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
    })
    .await
    .ok();
    iii.shutdown_async().await;
}
