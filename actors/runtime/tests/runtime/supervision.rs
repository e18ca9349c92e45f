//! Supervision: strategies, restart types, intensity, backoff, dynamic children, start failures
//! and shutdown order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, Backoff, ChildSpec, Context, Error, ExitReason, Intensity, Node, Restart,
    Strategy, SupervisionEvent, SupervisorSpec,
};
use micro_testkit::{eventually, next_event, within};
use tokio::time::Instant;

use crate::common::{Cmd, Journal, Probe, count};

async fn node() -> Node {
    micro_testkit::init_tracing();
    Node::builder().name("test").start().await.unwrap()
}

fn quick(strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new(strategy)
        .named("sup")
        .backoff(Backoff::none())
        .intensity(Intensity::new(10, Duration::from_secs(10)))
}

/// Waits until the named child has been started again.
async fn restarted(events: &mut tokio::sync::broadcast::Receiver<SupervisionEvent>, name: &str) {
    next_event(events, &format!("{name} restarted"), |e| {
        e.is_start_of(name)
    })
    .await;
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child_with_fresh_state() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        quick(Strategy::OneForOne)
            .child(Probe::spec("a", &journal))
            .child(Probe::spec("b", &journal))
            .child(Probe::spec("c", &journal)),
    )
    .await
    .unwrap();
    let b = node.lookup::<Cmd>("b").unwrap();
    b.send(Cmd::Add(5)).unwrap();
    assert_eq!(count(&b).await.unwrap(), 5);
    journal.take();

    let mut events = node.supervision_events();
    b.send(Cmd::Panic).unwrap();
    restarted(&mut events, "b").await;

    assert_eq!(journal.lines(), ["b:start"], "only b starts again");
    assert_eq!(
        count(&b).await.unwrap(),
        0,
        "the new incarnation has fresh state"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_for_all_restarts_every_child_stopping_in_reverse_and_starting_in_order() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        quick(Strategy::OneForAll)
            .child(Probe::spec("a", &journal))
            .child(Probe::spec("b", &journal))
            .child(Probe::spec("c", &journal)),
    )
    .await
    .unwrap();
    journal.take();

    let mut events = node.supervision_events();
    node.lookup::<Cmd>("b").unwrap().send(Cmd::Fail).unwrap();
    restarted(&mut events, "c").await;

    // b failed (a failed actor's `stopped` hook does not run); c then a were stopped.
    assert_eq!(
        journal.lines(),
        ["c:stop", "a:stop", "a:start", "b:start", "c:start"]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        quick(Strategy::RestForOne)
            .child(Probe::spec("a", &journal))
            .child(Probe::spec("b", &journal))
            .child(Probe::spec("c", &journal))
            .child(Probe::spec("d", &journal)),
    )
    .await
    .unwrap();
    journal.take();

    let mut events = node.supervision_events();
    node.lookup::<Cmd>("b").unwrap().send(Cmd::Panic).unwrap();
    restarted(&mut events, "d").await;

    assert_eq!(
        journal.lines(),
        ["d:stop", "c:stop", "b:start", "c:start", "d:start"],
        "a is untouched"
    );
    node.shutdown().await.unwrap();
}

/// A probe whose `started` hook fails once when armed: a child whose restart goes wrong.
struct StartsBadlyOnce {
    probe: Probe,
    armed: Arc<AtomicBool>,
}

impl StartsBadlyOnce {
    fn spec(label: &'static str, journal: &Journal, armed: &Arc<AtomicBool>) -> ChildSpec<Self> {
        let (journal, armed) = (journal.clone(), armed.clone());
        ChildSpec::new(move || StartsBadlyOnce {
            probe: Probe {
                label,
                journal: journal.clone(),
                count: 0,
            },
            armed: armed.clone(),
        })
        .named(label)
    }
}

impl Actor for StartsBadlyOnce {
    type Msg = Cmd;

    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let label = self.probe.label;
            self.probe.journal.record(format!("{label}:start fails"));
            return Err(format!("{label} cannot start this time").into());
        }
        self.probe
            .journal
            .record(format!("{}:start", self.probe.label));
        Ok(())
    }

    async fn handle(&mut self, _: &mut Context<Self>, msg: Cmd) -> Result<(), ActorError> {
        match msg {
            Cmd::Panic => panic!("{} was told to panic", self.probe.label),
            Cmd::Get(reply) => {
                let _ = reply.send(self.probe.count);
            }
            _ => {}
        }
        Ok(())
    }

    async fn stopped(&mut self, _: &mut Context<Self>) {
        self.probe
            .journal
            .record(format!("{}:stop", self.probe.label));
    }
}

/// a, b, c under one supervisor of `strategy`; b's next start will fail once it is armed.
async fn group_with_a_bad_restart(
    strategy: Strategy,
    intensity: Intensity,
) -> (Node, Journal, Arc<AtomicBool>) {
    let node = node().await;
    let journal = Journal::default();
    let armed = Arc::new(AtomicBool::new(false));
    node.spawn_supervisor(
        quick(strategy)
            .intensity(intensity)
            .child(Probe::spec("a", &journal))
            .child(StartsBadlyOnce::spec("b", &journal, &armed))
            .child(Probe::spec("c", &journal)),
    )
    .await
    .unwrap();
    journal.take();
    armed.store(true, Ordering::SeqCst);
    (node, journal, armed)
}

#[tokio::test]
async fn one_for_all_starts_the_whole_group_again_when_a_restart_fails_midway() {
    let (node, journal, armed) = group_with_a_bad_restart(
        Strategy::OneForAll,
        Intensity::new(10, Duration::from_secs(60)),
    )
    .await;
    let mut events = node.supervision_events();
    node.lookup::<Cmd>("b").unwrap().send(Cmd::Panic).unwrap();
    restarted(&mut events, "c").await;
    assert!(!armed.load(Ordering::SeqCst), "b's start did fail once");

    // As OTP: the pass that failed at b is undone (a stops again) and the group starts again
    // together, rather than going on from b with the a of the failed pass.
    assert_eq!(
        journal.lines(),
        [
            "c:stop",
            "a:stop",
            "a:start",
            "b:start fails",
            "a:stop",
            "a:start",
            "b:start",
            "c:start"
        ]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rest_for_one_starts_again_from_the_child_whose_restart_failed() {
    let (node, journal, _armed) = group_with_a_bad_restart(
        Strategy::RestForOne,
        Intensity::new(10, Duration::from_secs(60)),
    )
    .await;
    let mut events = node.supervision_events();
    node.lookup::<Cmd>("b").unwrap().send(Cmd::Panic).unwrap();
    restarted(&mut events, "c").await;

    assert_eq!(
        journal.lines(),
        ["c:stop", "b:start fails", "b:start", "c:start"],
        "a is untouched"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_group_restart_counts_against_the_intensity() {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        // One restart allowed: the crash is the first, b's failed start one too many.
        let (node, journal, _armed) =
            group_with_a_bad_restart(strategy, Intensity::new(1, Duration::from_secs(60))).await;
        let mut events = node.supervision_events();
        node.lookup::<Cmd>("b").unwrap().send(Cmd::Panic).unwrap();
        let failed = next_event(&mut events, "sup gives up", |e| e.failure().is_some()).await;
        assert_eq!(failed.supervisor(), "sup", "{strategy:?}: {failed:?}");
        assert_eq!(journal.count("b:start fails"), 1, "{strategy:?}");
        assert_eq!(journal.count("b:start"), 0, "{strategy:?}: no second try");
        node.shutdown().await.unwrap();
    }
}

/// Runs one child of `restart` type, ends it by `how`, and tells whether it was restarted.
async fn is_restarted(restart: Restart, how: fn() -> Cmd) -> bool {
    let node = node().await;
    let journal = Journal::default();
    let sup = node
        .spawn_supervisor(
            quick(Strategy::OneForOne).child(Probe::spec("x", &journal).restart(restart)),
        )
        .await
        .unwrap();
    let mut events = node.supervision_events();
    node.lookup::<Cmd>("x").unwrap().send(how()).unwrap();
    next_event(&mut events, "x exited", |e| e.is_exit_of("x")).await;
    // The supervisor decides in the same step it reports the exit, so after it answers this
    // question the decision is visible in its events.
    let children = sup.children().await.unwrap();
    let (mut scheduled, mut started) = (false, false);
    while let Ok(event) = events.try_recv() {
        scheduled |= event.delay().is_some();
        started |= event.is_start_of("x");
    }
    if !scheduled {
        assert!(
            children.iter().all(|c| c.id.is_none()),
            "a child that is not restarted is not running"
        );
    } else if !started {
        restarted(&mut events, "x").await;
    }
    node.shutdown().await.unwrap();
    scheduled
}

#[tokio::test]
async fn restart_types_decide_by_exit_reason() {
    let normal = || Cmd::Stop;
    let error = || Cmd::Fail;
    let panic = || Cmd::Panic;
    let table = [
        (Restart::Permanent, "normal", normal as fn() -> Cmd, true),
        (Restart::Permanent, "error", error, true),
        (Restart::Permanent, "panic", panic, true),
        (Restart::Transient, "normal", normal, false),
        (Restart::Transient, "error", error, true),
        (Restart::Transient, "panic", panic, true),
        (Restart::Temporary, "normal", normal, false),
        (Restart::Temporary, "error", error, false),
        (Restart::Temporary, "panic", panic, false),
    ];
    for (restart, exit, how, expected) in table {
        assert_eq!(
            is_restarted(restart, how).await,
            expected,
            "{restart:?} child after a {exit} exit"
        );
    }
}

#[tokio::test]
async fn exit_reasons_tell_error_from_panic() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn(Probe::spec("x", &journal)).await.unwrap();
    let x = node.lookup::<Cmd>("x").unwrap();
    let mut events = node.supervision_events();

    x.send(Cmd::Panic).unwrap();
    let exited = next_event(&mut events, "x panicked", |e| e.is_exit_of("x")).await;
    assert_eq!(
        exited.reason(),
        Some(&ExitReason::Panic("x was told to panic".into()))
    );

    restarted(&mut events, "x").await;
    x.send(Cmd::Fail).unwrap();
    let exited = next_event(&mut events, "x failed", |e| e.is_exit_of("x")).await;
    assert_eq!(
        exited.reason(),
        Some(&ExitReason::Error("x was told to fail".into()))
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn exceeding_intensity_fails_the_supervisor_and_its_parent_restarts_it() {
    let node = node().await;
    let journal = Journal::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .named("inner")
        .backoff(Backoff::none())
        .intensity(Intensity::new(2, Duration::from_secs(60)))
        .child(Probe::spec("w", &journal));
    node.spawn_supervisor(quick(Strategy::OneForOne).named("outer").child(inner))
        .await
        .unwrap();
    let w = node.lookup::<Cmd>("w").unwrap();
    let mut events = node.supervision_events();

    for round in 1..=2 {
        w.send(Cmd::Panic).unwrap();
        restarted(&mut events, "w").await;
        assert_eq!(journal.count("w:start"), 1 + round);
    }
    // The third crash within the period is one too many for "inner".
    w.send(Cmd::Panic).unwrap();
    let failed = next_event(&mut events, "inner gives up", |e| e.failure().is_some()).await;
    assert_eq!(failed.supervisor(), "inner");
    // "outer" restarts "inner", which starts w afresh.
    restarted(&mut events, "inner").await;
    eventually("w answers again", || async { count(&w).await == Ok(0) }).await;
    node.shutdown().await.unwrap();
}

/// A supervisor `inner` of `restart` type, under `outer`, exceeds its intensity; tells whether
/// `outer` restarts it. Either way `outer` and the node keep running.
async fn gave_up_and_is_restarted(restart: Restart) -> bool {
    let node = node().await;
    let journal = Journal::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .named("inner")
        .restart(restart)
        .backoff(Backoff::none())
        .intensity(Intensity::new(1, Duration::from_secs(60)))
        .child(Probe::spec("w", &journal));
    let outer = node
        .spawn_supervisor(quick(Strategy::OneForOne).named("outer").child(inner))
        .await
        .unwrap();
    let w = node.lookup::<Cmd>("w").unwrap();
    let mut events = node.supervision_events();
    w.send(Cmd::Panic).unwrap();
    restarted(&mut events, "w").await;
    w.send(Cmd::Panic).unwrap();

    let exited = next_event(&mut events, "inner exits", |e| e.is_exit_of("inner")).await;
    // Reported as before: an abnormal exit that says the supervisor gave up.
    let reason = exited.reason();
    assert!(
        matches!(reason, Some(ExitReason::Error(text)) if text.contains("inner gave up")),
        "{reason:?}"
    );
    // `outer` decides in the step that reported the exit; once it answers, the decision shows.
    let children = outer.children().await.unwrap();
    let (mut scheduled, mut started) = (false, false);
    while let Ok(event) = events.try_recv() {
        scheduled |= event.child() == Some("inner") && event.delay().is_some();
        started |= event.is_start_of("inner");
    }
    if scheduled {
        if !started {
            restarted(&mut events, "inner").await;
        }
        eventually("w answers again", || async { count(&w).await == Ok(0) }).await;
    } else {
        assert!(
            children.iter().all(|c| c.name.as_deref() != Some("inner")),
            "{restart:?}: an inner that is not restarted leaves outer's children"
        );
        assert!(matches!(node.lookup::<Cmd>("w"), Err(Error::NotFound(_))));
    }
    assert_eq!(node.status(), micro_runtime::NodeStatus::Running);
    assert!(
        outer.children().await.is_ok(),
        "{restart:?}: outer keeps running"
    );
    node.shutdown().await.unwrap();
    scheduled
}

#[tokio::test]
async fn a_supervisor_that_gives_up_is_restarted_only_if_permanent() {
    for (restart, expected) in [
        (Restart::Permanent, true),
        (Restart::Transient, false),
        (Restart::Temporary, false),
    ] {
        assert_eq!(
            gave_up_and_is_restarted(restart).await,
            expected,
            "{restart:?} supervisor that gave up"
        );
    }
}

#[tokio::test]
async fn a_failing_root_stops_the_node_with_a_clear_error() {
    micro_testkit::init_tracing();
    let journal = Journal::default();
    let node = Node::builder()
        .name("fragile")
        .root(
            SupervisorSpec::new(Strategy::OneForOne)
                .backoff(Backoff::none())
                .intensity(Intensity::new(1, Duration::from_secs(60)))
                .child(Probe::spec("x", &journal)),
        )
        .start()
        .await
        .unwrap();
    let x = node.lookup::<Cmd>("x").unwrap();
    let mut events = node.supervision_events();
    x.send(Cmd::Panic).unwrap();
    restarted(&mut events, "x").await;
    x.send(Cmd::Panic).unwrap();

    let outcome = within("the node stops", node.stopped()).await;
    match outcome {
        Err(Error::SupervisorFailed { supervisor, reason }) => {
            assert_eq!(supervisor, "root");
            assert!(reason.contains("more than 1 restarts"), "{reason}");
        }
        other => panic!("expected the root's failure, got {other:?}"),
    }
    assert!(matches!(
        node.spawn(Probe::spec("y", &journal)).await,
        Err(Error::NodeStopped(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_its_cap_and_resets_after_a_quiet_period() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(Intensity::new(100, Duration::from_secs(1)))
            .backoff(
                Backoff::exponential(Duration::from_millis(100), Duration::from_millis(400))
                    .with_jitter(0.0)
                    .with_reset_after(Duration::from_secs(10)),
            )
            .child(Probe::spec("x", &journal)),
    )
    .await
    .unwrap();
    let x = node.lookup::<Cmd>("x").unwrap();
    let mut events = node.supervision_events();

    let mut observed = Vec::new();
    for _ in 0..4 {
        let crashed = Instant::now();
        x.send(Cmd::Panic).unwrap();
        restarted(&mut events, "x").await;
        observed.push(crashed.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    let crashed = Instant::now();
    x.send(Cmd::Panic).unwrap();
    restarted(&mut events, "x").await;
    observed.push(crashed.elapsed());

    let expected = [100, 200, 400, 400, 100].map(Duration::from_millis);
    for (got, want) in observed.iter().zip(expected) {
        assert!(
            *got >= want && *got < want + Duration::from_millis(5),
            "restart delays {observed:?}, expected about {expected:?}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_jitter_stays_within_its_fraction() {
    let backoff =
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(0.25);
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(Intensity::new(100, Duration::from_secs(1)))
            .backoff(backoff)
            .child(Probe::spec("x", &journal)),
    )
    .await
    .unwrap();
    let x = node.lookup::<Cmd>("x").unwrap();
    let mut events = node.supervision_events();
    for attempt in 0..5u32 {
        x.send(Cmd::Panic).unwrap();
        let event = next_event(&mut events, "restart scheduled", |e| e.delay().is_some()).await;
        let delay = event.delay().unwrap();
        let base = backoff.base_delay(attempt);
        assert!(
            delay >= base.mul_f64(0.75) && delay <= base.mul_f64(1.25),
            "attempt {attempt}: {delay:?} not within 25% of {base:?}"
        );
        restarted(&mut events, "x").await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn dynamic_children_start_and_stop_at_run_time() {
    let node = node().await;
    let journal = Journal::default();
    let sup = node
        .spawn_supervisor(quick(Strategy::OneForOne))
        .await
        .unwrap();

    let labels = ["d1", "d2", "d3"];
    let mut addrs = Vec::new();
    for label in labels {
        addrs.push(sup.start_child(Probe::spec(label, &journal)).await.unwrap());
    }
    let before = sup.children().await.unwrap();
    assert_eq!(
        before
            .iter()
            .map(|c| c.name.as_deref().unwrap())
            .collect::<Vec<_>>(),
        labels
    );
    assert!(before.iter().all(|c| c.dynamic && c.id.is_some()));

    sup.stop_child(addrs[1].id().unwrap()).await.unwrap();
    let after = sup.children().await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|c| c.name.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["d1", "d3"]
    );
    assert_eq!(journal.count("d2:stop"), 1, "stopped gracefully");
    assert!(matches!(
        addrs[1].send(Cmd::Add(1)),
        Err(Error::ActorStopped(_))
    ));
    assert!(
        matches!(node.lookup::<Cmd>("d2"), Err(Error::NotFound(_))),
        "and not restarted"
    );

    // Dynamic children are supervised like the others.
    let mut events = node.supervision_events();
    addrs[2].send(Cmd::Panic).unwrap();
    restarted(&mut events, "d3").await;
    assert!(matches!(
        sup.stop_child(addrs[1].id().unwrap()).await,
        Err(Error::NotFound(_))
    ));
    node.shutdown().await.unwrap();
}

struct FailsToStart;

impl Actor for FailsToStart {
    type Msg = ();
    async fn started(&mut self, _: &mut Context<Self>) -> Result<(), ActorError> {
        Err("the database is unreachable".into())
    }
    async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_child_start_failure_is_reported_to_whoever_starts_the_supervisor() {
    let node = node().await;
    let journal = Journal::default();
    let result = node
        .spawn_supervisor(
            quick(Strategy::OneForOne)
                .child(Probe::spec("a", &journal))
                .child(ChildSpec::new(|| FailsToStart).named("db"))
                .child(Probe::spec("c", &journal)),
        )
        .await;
    match result {
        Err(Error::StartFailed { child, reason }) => {
            assert_eq!(child, "db");
            assert!(reason.contains("the database is unreachable"), "{reason}");
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    assert_eq!(
        journal.lines(),
        ["a:start", "a:stop"],
        "a is stopped again, c never started"
    );
    assert!(node.lookup::<Cmd>("a").is_err());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_whole_tree_in_reverse_start_order() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn(Probe::spec("a", &journal)).await.unwrap();
    node.spawn(Probe::spec("b", &journal)).await.unwrap();
    node.spawn_supervisor(
        quick(Strategy::OneForOne)
            .child(Probe::spec("c", &journal))
            .child(Probe::spec("d", &journal)),
    )
    .await
    .unwrap();
    node.spawn(Probe::spec("e", &journal)).await.unwrap();
    journal.take();

    node.shutdown().await.unwrap();
    assert_eq!(
        journal.lines(),
        ["e:stop", "d:stop", "c:stop", "b:stop", "a:stop"]
    );
    assert_eq!(node.status(), micro_runtime::NodeStatus::Stopped(None));
}

#[tokio::test(start_paused = true)]
async fn shutdown_kills_a_child_that_does_not_stop_in_time() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn(Probe::spec("stuck", &journal).shutdown(Duration::from_millis(100)))
        .await
        .unwrap();
    node.spawn(Probe::spec("later", &journal)).await.unwrap();
    let stuck = node.lookup::<Cmd>("stuck").unwrap();
    // Busy for an hour: the graceful stop waits behind this message.
    let busy = tokio::spawn(async move {
        stuck
            .ask(
                |r| Cmd::Slow(Duration::from_secs(3600), r),
                Duration::from_secs(7200),
            )
            .await
    });
    tokio::task::yield_now().await;
    journal.take();

    let started = Instant::now();
    node.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the kill did not wait for the handler"
    );
    assert_eq!(
        journal.lines(),
        ["later:stop"],
        "a killed actor's stop hook does not run"
    );
    assert_eq!(busy.await.unwrap(), Err(Error::ReplyDropped));
}

// ---- Supervision from outside: whereis, stop and restart by name, nested supervisors by
// name, event accessors, waiting for a start ----

#[tokio::test]
async fn whereis_names_the_incarnation_that_runs_now() {
    let node = node().await;
    let journal = Journal::default();
    let sup = node
        .spawn_supervisor(quick(Strategy::OneForOne).child(Probe::spec("p", &journal)))
        .await
        .unwrap();
    let first = node.whereis("p").expect("p runs");
    assert_eq!(sup.children().await.unwrap()[0].id, Some(first));

    // p crashes and is restarted: whereis follows it to the new incarnation.
    let restarted = node.next_start("p");
    node.lookup::<Cmd>("p").unwrap().send(Cmd::Panic).unwrap();
    let second = within("p restarted", restarted).await.unwrap();
    assert_ne!(second, first, "a restart is a new incarnation");
    assert_eq!(node.whereis("p"), Some(second));

    // Stopped for good, p is nowhere; a name nobody holds never was.
    sup.stop_child_named("p").await.unwrap();
    assert_eq!(node.whereis("p"), None);
    assert_eq!(node.whereis("nobody"), None);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_child_is_restarted_and_stopped_by_name_whichever_incarnation_runs() {
    let node = node().await;
    let journal = Journal::default();
    // One restart allowed within a minute: restarts by hand must not use it up.
    let sup = node
        .spawn_supervisor(
            quick(Strategy::OneForAll)
                .intensity(Intensity::new(1, Duration::from_secs(60)))
                .child(Probe::spec("a", &journal))
                .child(Probe::spec("b", &journal)),
        )
        .await
        .unwrap();
    let b = node.lookup::<Cmd>("b").unwrap();
    b.send(Cmd::Add(7)).unwrap();
    assert_eq!(count(&b).await.unwrap(), 7);
    journal.take();

    // Three restarts by hand: b alone stops and starts again with fresh state each time (the
    // one-for-all strategy is for failures), and the new id is the one that runs.
    let mut events = node.supervision_events();
    for _ in 0..3 {
        let before = node.whereis("b").unwrap();
        let after = sup.restart_child("b").await.unwrap();
        assert_ne!(after, before);
        assert_eq!(node.whereis("b"), Some(after));
        let exited = next_event(&mut events, "b's old incarnation exits", |e| {
            e.is_exit_of("b")
        })
        .await;
        assert_eq!(exited.id(), Some(before));
        assert_eq!(exited.reason(), Some(&ExitReason::Normal));
        next_event(&mut events, "b starts again", |e| e.is_start_of("b")).await;
    }
    assert_eq!(journal.take(), ["b:stop", "b:start"].repeat(3));
    assert_eq!(count(&b).await.unwrap(), 0, "fresh state");

    // They did not count: the one crash the intensity allows is still restarted.
    let restarted = sup.next_start("b");
    b.send(Cmd::Panic).unwrap();
    within("b restarted after a crash", restarted)
        .await
        .unwrap();
    assert_eq!(node.status(), micro_runtime::NodeStatus::Running);
    assert!(sup.children().await.is_ok(), "sup did not give up");

    // Stopped by name (no id that went stale at the crash): removed, not restarted.
    journal.take();
    sup.stop_child_named("b").await.unwrap();
    assert_eq!(journal.lines(), ["b:stop"]);
    let names: Vec<_> = sup
        .children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name.unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    assert!(matches!(node.lookup::<Cmd>("b"), Err(Error::NotFound(_))));
    assert!(matches!(
        sup.stop_child_named("b").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        sup.restart_child("b").await,
        Err(Error::NotFound(_))
    ));
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_child_waiting_for_its_backoff_is_restarted_by_hand_at_once() {
    let node = node().await;
    let journal = Journal::default();
    let sup = node
        .spawn_supervisor(
            quick(Strategy::OneForOne)
                .backoff(
                    Backoff::exponential(Duration::from_secs(3600), Duration::from_secs(3600))
                        .with_jitter(0.0),
                )
                .child(Probe::spec("slow", &journal)),
        )
        .await
        .unwrap();
    let mut events = node.supervision_events();
    node.lookup::<Cmd>("slow")
        .unwrap()
        .send(Cmd::Panic)
        .unwrap();
    let scheduled = next_event(&mut events, "slow's restart is scheduled", |e| {
        e.delay().is_some()
    })
    .await;
    assert_eq!(scheduled.delay(), Some(Duration::from_secs(3600)));
    assert_eq!(node.whereis("slow"), None, "it waits an hour");

    let id = sup.restart_child("slow").await.unwrap();
    assert_eq!(node.whereis("slow"), Some(id));
    // The hour passes: the scheduled restart finds it running and leaves it alone.
    tokio::time::sleep(Duration::from_secs(3601)).await;
    assert_eq!(node.whereis("slow"), Some(id));
    assert_eq!(journal.count("slow:start"), 2);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_nested_supervisor_is_found_by_name_after_it_restarts() {
    let node = node().await;
    let journal = Journal::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .named("inner")
        .child(Probe::spec("w", &journal));
    let outer = node
        .spawn_supervisor(quick(Strategy::OneForOne).named("outer").child(inner))
        .await
        .unwrap();

    let found = node
        .supervisor("inner")
        .await
        .expect("inner is in the tree");
    assert_eq!(found.name(), "inner");
    let children = found.children().await.unwrap();
    assert_eq!(children[0].name.as_deref(), Some("w"));
    assert_eq!(children[0].id, node.whereis("w"));
    assert_eq!(
        node.supervisor("root").await.unwrap().id(),
        node.root().unwrap().id()
    );
    assert_eq!(node.supervisor("outer").await.unwrap().id(), outer.id());
    assert!(node.supervisor("nowhere").await.is_none());

    // outer restarts inner (by hand here): the search finds the new one, which runs a new w.
    let old_w = node.whereis("w").unwrap();
    let new_inner = outer.restart_child("inner").await.unwrap();
    let again = node.supervisor("inner").await.unwrap();
    assert_eq!(again.id(), new_inner);
    assert_ne!(again.id(), found.id());
    assert_ne!(node.whereis("w"), Some(old_w));
    again.stop_child_named("w").await.unwrap();
    assert_eq!(node.whereis("w"), None);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn next_start_sees_a_start_that_happened_before_it_was_polled() {
    let node = node().await;
    let journal = Journal::default();
    let sup = node
        .spawn_supervisor(quick(Strategy::OneForOne).child(Probe::spec("x", &journal)))
        .await
        .unwrap();
    let other = node
        .spawn_supervisor(quick(Strategy::OneForOne).named("other"))
        .await
        .unwrap();
    let old = node.whereis("x").unwrap();
    let on_node = node.next_start("x");
    let on_sup = sup.next_start("x");
    let on_other = other.next_start("x");

    // x crashes and is back before anyone polls the futures.
    node.lookup::<Cmd>("x").unwrap().send(Cmd::Panic).unwrap();
    eventually("x runs again", || async {
        node.whereis("x").is_some_and(|id| id != old)
    })
    .await;
    let new = node.whereis("x");
    assert_eq!(within("the node saw x start", on_node).await.ok(), new);
    assert_eq!(within("sup saw x start", on_sup).await.ok(), new);

    // Another supervisor's wait is for its own children only, and ends when the node stops.
    let waiting = tokio::spawn(on_other);
    node.shutdown().await.unwrap();
    assert!(matches!(
        within("the wait ends with the node", waiting)
            .await
            .unwrap(),
        Err(Error::NodeStopped(_))
    ));
}

#[tokio::test]
async fn supervision_events_are_read_without_matching_their_variants() {
    let node = node().await;
    let journal = Journal::default();
    node.spawn_supervisor(
        quick(Strategy::OneForOne)
            .intensity(Intensity::new(0, Duration::from_secs(60)))
            .restart(Restart::Temporary)
            .child(Probe::spec("x", &journal)),
    )
    .await
    .unwrap();
    let old = node.whereis("x");
    let mut events = node.supervision_events();
    node.lookup::<Cmd>("x").unwrap().send(Cmd::Panic).unwrap();

    let exited = next_event(&mut events, "x exits", |e| e.is_exit_of("x")).await;
    assert_eq!(exited.supervisor(), "sup");
    assert_eq!(exited.child(), Some("x"));
    assert_eq!(exited.id(), old);
    assert_eq!(
        exited.reason(),
        Some(&ExitReason::Panic("x was told to panic".into()))
    );
    assert_eq!((exited.failure(), exited.delay()), (None, None));

    // No restart is allowed: sup gives up, an event about itself rather than a child.
    let failed = next_event(&mut events, "sup gives up", |e| e.failure().is_some()).await;
    assert_eq!(failed.supervisor(), "sup");
    assert_eq!(
        (failed.child(), failed.id(), failed.reason()),
        (None, None, None)
    );
    assert!(failed.failure().unwrap().contains("more than 0 restarts"));
    node.shutdown().await.unwrap();
}
