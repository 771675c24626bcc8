//! The generation algorithms against a provider in memory: every path
//! ARCHITECTURE.md describes for `autoscale:update` (success, nodes never
//! in service, an AWS error at each step, a node lost while settling, a
//! cleanup that fails too, cancellation) and the instance-refresh driver.
//! Time is real but tiny (polls of a millisecond); what happens is driven
//! by how many times the fake was asked, not by the clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;
use crate::{AsgInstance, Error};

const GROUP: &str = "12_04-bee";

/// AWS in memory: launch templates, autoscaling groups whose instances
/// come into service after a number of looks, and injected failures.
#[derive(Default)]
struct Fake {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Launch template name -> its latest version.
    templates: BTreeMap<String, i64>,
    asgs: BTreeMap<String, Asg>,
    /// Every call (`CreateAutoScalingGroup 12_04-bee-v2`), in order, with its time.
    calls: Vec<(Instant, String)>,
    /// Calls of each operation so far.
    counts: BTreeMap<&'static str, usize>,
    /// (operation, n): the n-th call of the operation fails.
    failures: Vec<(&'static str, usize)>,
    /// The operation fails on every call.
    always_fails: Option<&'static str>,
    /// Looks at a new group before its instances are in service; `None`: never.
    in_service_after: Option<usize>,
    /// On this look at a new group, one of its instances turns unhealthy.
    lost_at_look: Option<usize>,
    looks: BTreeMap<String, usize>,
    /// Fires on this look at a new group (the test's cancellation).
    on_look: Option<(usize, oneshot::Sender<()>)>,
    /// What successive looks at the instance refresh find.
    refresh_states: VecDeque<RefreshState>,
    refresh_unavailable: bool,
}

impl Fake {
    /// Generation 1 of the group serving with two nodes; new nodes are in
    /// service on the second look.
    fn serving() -> Fake {
        let fake = Fake::default();
        {
            let mut state = fake.state.lock().unwrap();
            state.templates.insert(template_name("12_04-bee-v1"), 1);
            let mut v1 = asg("12_04-bee-v1", 2);
            for instance in &mut v1.instances {
                instance.lifecycle = "InService".into();
            }
            state.asgs.insert(v1.name.clone(), v1);
            state.in_service_after = Some(2);
        }
        fake
    }

    fn with(self, change: impl FnOnce(&mut State)) -> Fake {
        change(&mut self.state.lock().unwrap());
        self
    }

    /// Records the call; fails it when told to.
    fn call(&self, operation: &'static str, target: &str) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap();
        state.calls.push((Instant::now(), format!("{operation} {target}")));
        let count = state.counts.entry(operation).or_default();
        *count += 1;
        let n = *count;
        if state.always_fails == Some(operation) || state.failures.contains(&(operation, n)) {
            return Err(Error::Api {
                operation,
                region: "us-east-1".into(),
                message: "InternalFailure: injected by the test".into(),
            });
        }
        Ok(())
    }

    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.iter().map(|(_, call)| call.clone()).collect()
    }

    /// When the first call matching `call` was made.
    fn time_of(&self, call: &str, nth: usize) -> Instant {
        let state = self.state.lock().unwrap();
        let mut matching = state.calls.iter().filter(|(_, c)| c == call);
        matching.nth(nth - 1).unwrap_or_else(|| panic!("no call {call} #{nth}")).0
    }

    fn asg_names(&self) -> Vec<String> {
        self.state.lock().unwrap().asgs.keys().cloned().collect()
    }

    fn template_names(&self) -> Vec<String> {
        self.state.lock().unwrap().templates.keys().cloned().collect()
    }
}

/// A new autoscaling group as AWS first describes it: its nodes pending.
fn asg(name: &str, nodes: usize) -> Asg {
    Asg {
        name: name.into(),
        group: GROUP.into(),
        status: None,
        min: nodes as i32,
        max: nodes as i32,
        desired: nodes as i32,
        launch_template: Some((template_name(name), "1".into())),
        created: String::new(),
        instances: (0..nodes)
            .map(|i| AsgInstance {
                id: format!("i-{name}-{i}"),
                lifecycle: "Pending".into(),
                health: "Healthy".into(),
                zone: "us-east-1a".into(),
            })
            .collect(),
    }
}

impl Provider for Fake {
    async fn group_asgs(&self, group: &str) -> Result<Vec<Asg>, Error> {
        self.call("DescribeAutoScalingGroups", group)?;
        Ok(self.state.lock().unwrap().asgs.values().filter(|a| a.group == group).cloned().collect())
    }

    async fn put_launch_template(&self, name: &str, _spec: &LaunchSpec) -> Result<TemplateVersion, Error> {
        self.call("CreateLaunchTemplate", name)?;
        let mut state = self.state.lock().unwrap();
        let version = state.templates.entry(name.to_owned()).or_default();
        *version += 1;
        Ok(TemplateVersion { template_id: format!("lt-{name}"), template_name: name.into(), version: *version })
    }

    async fn set_default_version(&self, template: &TemplateVersion) -> Result<(), Error> {
        self.call("ModifyLaunchTemplate", &template.template_name)
    }

    async fn delete_launch_template(&self, name: &str) -> Result<(), Error> {
        self.call("DeleteLaunchTemplate", name)?;
        self.state.lock().unwrap().templates.remove(name);
        Ok(())
    }

    async fn create_asg(&self, new: &NewAsg) -> Result<(), Error> {
        self.call("CreateAutoScalingGroup", &new.name)?;
        let mut state = self.state.lock().unwrap();
        assert!(!state.asgs.contains_key(&new.name), "{} created twice", new.name);
        state.asgs.insert(new.name.clone(), asg(&new.name, new.settings.desired as usize));
        Ok(())
    }

    async fn asg(&self, name: &str) -> Result<Option<Asg>, Error> {
        self.call("DescribeAutoScalingGroups", name)?;
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        let looks = state.looks.entry(name.to_owned()).or_default();
        *looks += 1;
        let looks = *looks;
        if state.on_look.as_ref().is_some_and(|(at, _)| *at == looks) {
            let (_, fire) = state.on_look.take().unwrap();
            let _ = fire.send(());
        }
        let Some(found) = state.asgs.get_mut(name) else { return Ok(None) };
        if name != "12_04-bee-v1" && state.in_service_after.is_some_and(|after| looks >= after) {
            for instance in &mut found.instances {
                instance.lifecycle = "InService".into();
            }
        }
        if state.lost_at_look == Some(looks) {
            found.instances[0].health = "Unhealthy".into();
        }
        Ok(Some(found.clone()))
    }

    async fn delete_asg(&self, name: &str) -> Result<(), Error> {
        self.call("DeleteAutoScalingGroup", name)?;
        let removed = self.state.lock().unwrap().asgs.remove(name);
        assert!(removed.is_some(), "deleted {name}, which does not exist");
        Ok(())
    }

    async fn check_instance_refresh(&self, asg: &str) -> Result<(), Error> {
        self.call("DescribeInstanceRefreshes", asg)?;
        if self.state.lock().unwrap().refresh_unavailable {
            return Err(Error::NotImplemented {
                operation: "DescribeInstanceRefreshes",
                region: "us-east-1".into(),
                status: 500,
            });
        }
        Ok(())
    }

    async fn start_instance_refresh(
        &self,
        asg: &str,
        _template: &TemplateVersion,
        _warmup_seconds: u64,
    ) -> Result<Refresh, Error> {
        self.call("StartInstanceRefresh", asg)?;
        Ok(Refresh { asg: asg.into(), id: "refresh-1".into() })
    }

    async fn instance_refresh(&self, refresh: &Refresh) -> Result<RefreshState, Error> {
        self.call("DescribeInstanceRefreshes", &refresh.id)?;
        let mut state = self.state.lock().unwrap();
        let next = state.refresh_states.pop_front();
        Ok(next.unwrap_or_else(|| refresh_state("InProgress", 50)))
    }

    async fn rollback_instance_refresh(&self, refresh: &Refresh) -> Result<(), Error> {
        self.call("RollbackInstanceRefresh", &refresh.id)
    }
}

fn spec() -> LaunchSpec {
    LaunchSpec {
        image_id: "ami-2".into(),
        instance_type: "m3.large".into(),
        key_name: None,
        security_group_ids: vec![],
        subnet_id: None,
        iam_instance_profile: None,
        user_data: "#!/bin/sh\n".into(),
    }
}

fn settings() -> AsgSettings {
    AsgSettings {
        min: 2,
        max: 2,
        desired: 2,
        grace_seconds: 120,
        zones: vec!["us-east-1a".into()],
        subnet_id: None,
        tags: vec![("group".into(), GROUP.into())],
    }
}

fn timing(settle_ms: u64) -> Timing {
    Timing { wait: Duration::from_secs(5), poll: Duration::from_millis(1), settle: Duration::from_millis(settle_ms) }
}

/// A replacement that is never cancelled; the progress it reported, as lines.
async fn run_replace(fake: &Fake, timing: Timing) -> (Result<Replaced, UpdateError>, Vec<String>) {
    run_replace_until(fake, timing, std::future::pending()).await
}

async fn run_replace_until(
    fake: &Fake,
    timing: Timing,
    cancel: impl Future<Output = &'static str>,
) -> (Result<Replaced, UpdateError>, Vec<String>) {
    let (old, generation) = live_generations(fake, GROUP).await.unwrap();
    let (spec, settings) = (spec(), settings());
    let replacement = Replacement { group: GROUP, old: &old, generation, spec: &spec, settings: &settings, timing };
    let mut shown = Vec::new();
    let result = replace(fake, &replacement, cancel, |p| shown.push(show(&p))).await;
    (result, shown)
}

fn show(progress: &Progress<'_>) -> String {
    match progress {
        Progress::Created { asg } => format!("created {} from {}", asg.name, asg.template.template_name),
        Progress::Looked { line, .. } => format!("looked: {line}"),
        Progress::Settling { asg, settle } => format!("settling {asg} for {settle:?}"),
        Progress::DeletedOld { asg } => format!("deleted {asg}"),
        Progress::RefreshStarted { refresh, template } => {
            format!("refresh {} onto {}:{}", refresh.id, template.template_name, template.version)
        }
        Progress::RefreshLooked { state, .. } => format!("refresh {} {}%", state.status, state.percentage_complete),
    }
}

/// Generation 1 serves as before: its group, its nodes, its template.
fn assert_old_serving(fake: &Fake) {
    assert_eq!(fake.asg_names(), ["12_04-bee-v1"], "{:#?}", fake.calls());
    assert_eq!(fake.template_names(), ["gantry-12_04-bee-v1"], "{:#?}", fake.calls());
    assert!(!fake.calls().iter().any(|c| c.ends_with("12_04-bee-v1") && c.starts_with("Delete")));
}

#[tokio::test]
async fn replace_deletes_the_old_generation_only_after_the_new_one_served_through_the_settle_time() {
    let fake = Fake::serving();
    let (result, shown) = run_replace(&fake, timing(30)).await;
    let replaced = result.unwrap();
    assert_eq!(replaced.new.name, "12_04-bee-v2");
    assert_eq!(replaced.new.template.template_name, "gantry-12_04-bee-v2");
    assert_eq!(replaced.deleted, ["12_04-bee-v1"]);
    assert_eq!(
        shown,
        [
            "created 12_04-bee-v2 from gantry-12_04-bee-v2",
            "looked: 12_04-bee-v2: 0/2 in service (i-12_04-bee-v2-0 Pending/Healthy, i-12_04-bee-v2-1 Pending/Healthy)",
            "looked: 12_04-bee-v2: 2/2 in service",
            "settling 12_04-bee-v2 for 30ms",
            "deleted 12_04-bee-v1",
        ]
    );
    assert_eq!(
        fake.calls(),
        [
            "DescribeAutoScalingGroups 12_04-bee",
            "CreateLaunchTemplate gantry-12_04-bee-v2",
            "ModifyLaunchTemplate gantry-12_04-bee-v2",
            "CreateAutoScalingGroup 12_04-bee-v2",
            "DescribeAutoScalingGroups 12_04-bee-v2",
            "DescribeAutoScalingGroups 12_04-bee-v2",
            "DescribeAutoScalingGroups 12_04-bee-v2",
            "DeleteAutoScalingGroup 12_04-bee-v1",
            "DeleteLaunchTemplate gantry-12_04-bee-v1",
        ]
    );
    let in_service = fake.time_of("DescribeAutoScalingGroups 12_04-bee-v2", 2);
    let old_deleted = fake.time_of("DeleteAutoScalingGroup 12_04-bee-v1", 1);
    assert!(old_deleted - in_service >= Duration::from_millis(30), "{:?}", old_deleted - in_service);
    assert_eq!(fake.asg_names(), ["12_04-bee-v2"]);
    assert_eq!(fake.template_names(), ["gantry-12_04-bee-v2"]);
}

#[tokio::test]
async fn nodes_never_in_service_within_the_wait_abandon_the_new_generation() {
    let fake = Fake::serving().with(|s| s.in_service_after = None);
    let timing = Timing { wait: Duration::from_millis(20), ..timing(0) };
    let started = Instant::now();
    let (result, shown) = run_replace(&fake, timing).await;
    let error = result.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(20), "the whole wait is waited");
    assert_eq!(
        error.to_string(),
        "not every node was in service after 20ms: 12_04-bee-v2: 0/2 in service \
         (i-12_04-bee-v2-0 Pending/Healthy, i-12_04-bee-v2-1 Pending/Healthy)\n\
         deleted the new autoscaling group 12_04-bee-v2; 12_04-bee-v1 keeps serving"
    );
    assert!(matches!(error, UpdateError::Abandoned { why: Failure::NotInService { .. }, .. }));
    assert_eq!(shown.iter().filter(|s| s.starts_with("looked")).count(), 1, "unchanged looks are not reported");
    assert_old_serving(&fake);
}

/// What each step's failure must lead to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The error, with nothing made.
    NothingMade,
    /// The new generation deleted again; the old one serves.
    Abandoned,
    /// The new generation serves; the old one is still there.
    OldNotDeleted,
}

#[tokio::test]
async fn an_aws_error_at_each_step_is_cleaned_up_and_said() {
    // The first describe lists the group's generations; then the new nodes
    // are looked at twice until in service, and once more after settling.
    let steps = [
        (("CreateLaunchTemplate", 1), Outcome::NothingMade, "CreateLaunchTemplate in us-east-1 failed"),
        (("ModifyLaunchTemplate", 1), Outcome::Abandoned, "deleted the launch template gantry-12_04-bee-v2"),
        (("CreateAutoScalingGroup", 1), Outcome::Abandoned, "deleted the launch template gantry-12_04-bee-v2"),
        (("DescribeAutoScalingGroups", 2), Outcome::Abandoned, "looking at 12_04-bee-v2: DescribeAutoScalingGroups"),
        (("DescribeAutoScalingGroups", 4), Outcome::Abandoned, "deleted the new autoscaling group 12_04-bee-v2"),
        (("DeleteAutoScalingGroup", 1), Outcome::OldNotDeleted, "delete it and gantry-12_04-bee-v1 by hand"),
        (("DeleteLaunchTemplate", 1), Outcome::OldNotDeleted, "deleting the old autoscaling group 12_04-bee-v1 failed"),
    ];
    for (failure, expected, said) in steps {
        let fake = Fake::serving().with(|s| s.failures.push(failure));
        let (result, _) = run_replace(&fake, timing(0)).await;
        let error = result.expect_err("the step failed");
        let outcome = match &error {
            UpdateError::Aws(_) => Outcome::NothingMade,
            UpdateError::Abandoned { serving, .. } => {
                assert_eq!(serving, &["12_04-bee-v1"]);
                Outcome::Abandoned
            }
            UpdateError::OldNotDeleted { new, .. } => {
                assert_eq!(new, "12_04-bee-v2");
                Outcome::OldNotDeleted
            }
            other => panic!("{failure:?}: {other:?}"),
        };
        assert_eq!(outcome, expected, "{failure:?}: {error}");
        assert!(error.to_string().contains(said), "{failure:?}: no {said:?} in {error}");
        if expected == Outcome::OldNotDeleted {
            assert!(fake.asg_names().contains(&"12_04-bee-v2".to_string()), "{failure:?}: the new generation serves");
        } else {
            assert_old_serving(&fake);
        }
    }
}

#[tokio::test]
async fn a_node_lost_while_settling_abandons_the_new_generation() {
    // In service on the second look; the third, after settling, finds one node unhealthy.
    let fake = Fake::serving().with(|s| s.lost_at_look = Some(3));
    let (result, _) = run_replace(&fake, timing(5)).await;
    let error = result.unwrap_err();
    assert!(matches!(error, UpdateError::Abandoned { why: Failure::StoppedServing { .. }, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the new nodes stopped serving while other nodes updated: 12_04-bee-v2: 1/2 in service \
         (i-12_04-bee-v2-0 InService/Unhealthy)\n\
         deleted the new autoscaling group 12_04-bee-v2; 12_04-bee-v1 keeps serving"
    );
    assert_old_serving(&fake);
}

#[tokio::test]
async fn a_cleanup_that_fails_too_names_what_to_delete_by_hand() {
    let fake = Fake::serving().with(|s| {
        s.in_service_after = None;
        s.always_fails = Some("DeleteAutoScalingGroup");
    });
    let timing = Timing { wait: Duration::from_millis(5), ..timing(0) };
    let (result, _) = run_replace(&fake, timing).await;
    let error = result.unwrap_err();
    let UpdateError::Abandoned { cleanup: Cleanup::Failed { asg, template, .. }, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!((asg.as_str(), template.as_str()), ("12_04-bee-v2", "gantry-12_04-bee-v2"));
    let said = error.to_string();
    assert!(
        said.contains(
            "cleaning up 12_04-bee-v2 failed too (DeleteAutoScalingGroup in us-east-1 failed: InternalFailure: \
             injected by the test): delete it and gantry-12_04-bee-v2 by hand; 12_04-bee-v1 keeps serving"
        ),
        "{said}"
    );
    assert!(fake.asg_names().contains(&"12_04-bee-v1".to_string()));
    assert!(!fake.calls().contains(&"DeleteAutoScalingGroup 12_04-bee-v1".to_string()));
}

#[tokio::test]
async fn cancellation_while_waiting_or_settling_abandons_the_new_generation() {
    // Look 1: still waiting for the nodes; look 2: in service, then settling for a minute.
    for (cancel_at_look, in_service_after) in [(1, None), (2, Some(2))] {
        let (fire, fired) = oneshot::channel();
        let fake = Fake::serving().with(|s| {
            s.in_service_after = in_service_after;
            s.on_look = Some((cancel_at_look, fire));
        });
        let timing =
            Timing { wait: Duration::from_secs(60), poll: Duration::from_millis(1), settle: Duration::from_secs(60) };
        let started = Instant::now();
        let cancel = async {
            let _ = fired.await;
            "cancelled by the test"
        };
        let (result, _) = run_replace_until(&fake, timing, cancel).await;
        let error = result.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30), "the cancellation cut the wait short");
        assert!(matches!(error, UpdateError::Abandoned { why: Failure::Interrupted(_), .. }), "{error:?}");
        assert!(
            error.to_string().starts_with("interrupted (cancelled by the test)\ndeleted the new autoscaling group")
        );
        assert_old_serving(&fake);
    }
}

#[tokio::test]
async fn launch_deletes_its_template_when_the_group_cannot_be_created() {
    let fake = Fake::default().with(|s| s.failures.push(("CreateAutoScalingGroup", 1)));
    let error = launch(&fake, GROUP, 1, &spec(), &settings()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "CreateAutoScalingGroup in us-east-1 failed: InternalFailure: injected by the test\n\
         deleted the launch template gantry-12_04-bee-v1"
    );
    assert!(fake.asg_names().is_empty() && fake.template_names().is_empty());

    let fake = Fake::default();
    let new = launch(&fake, GROUP, 1, &spec(), &settings()).await.unwrap();
    assert_eq!((new.name.as_str(), new.template.version), ("12_04-bee-v1", 1));
    assert_eq!(fake.asg_names(), ["12_04-bee-v1"]);
}

#[tokio::test]
async fn live_generations_skip_groups_being_deleted_but_count_their_numbers() {
    let fake = Fake::serving().with(|s| {
        let mut v2 = asg("12_04-bee-v2", 1);
        v2.status = Some("Delete in progress".into());
        s.asgs.insert(v2.name.clone(), v2);
    });
    let (live, next) = live_generations(&fake, GROUP).await.unwrap();
    assert_eq!(live.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["12_04-bee-v1"]);
    assert_eq!(next, 3);
}

#[test]
fn the_next_generation_is_past_every_numbered_one() {
    assert_eq!(next_generation(GROUP, &[]), 1);
    let asgs = [asg("12_04-bee-v2", 0), asg("12_04-bee-v10", 0), asg("12_04-bee-manual", 0), asg("12_04-bee-v3x", 0)];
    assert_eq!(next_generation(GROUP, &asgs), 11);
    assert_eq!(next_generation("12_04", &asgs), 1, "another group's names do not count");
}

fn refresh_state(status: &str, percentage_complete: i32) -> RefreshState {
    let finished = !matches!(status, "Pending" | "InProgress");
    RefreshState {
        status: status.into(),
        percentage_complete,
        reason: (status == "Failed").then(|| "instances failed their health checks".into()),
        finished,
        succeeded: status == "Successful",
    }
}

/// A refresh of generation 1 of the group; the calls and progress it made.
async fn run_refresh(fake: &Fake, wait: Duration) -> (Result<TemplateVersion, UpdateError>, Vec<String>) {
    let old = asg("12_04-bee-v1", 2);
    let spec = spec();
    let timing = Timing { wait, ..timing(0) };
    let refreshing = Refreshing { asg: &old, spec: &spec, warmup_seconds: 120, timing };
    let mut shown = Vec::new();
    if let Err(e) = check_refresh(fake, &old).await {
        return (Err(e), shown);
    }
    let result = refresh(fake, &refreshing, std::future::pending(), |p| shown.push(show(&p))).await;
    (result, shown)
}

#[tokio::test]
async fn a_refresh_rolls_onto_a_new_template_version_and_makes_it_the_default() {
    let fake = Fake::serving().with(|s| {
        s.refresh_states =
            [refresh_state("Pending", 0), refresh_state("InProgress", 50), refresh_state("Successful", 100)].into();
    });
    let (result, shown) = run_refresh(&fake, Duration::from_secs(5)).await;
    let template = result.unwrap();
    assert_eq!((template.template_name.as_str(), template.version), ("gantry-12_04-bee-v1", 2));
    assert_eq!(
        shown,
        [
            "refresh refresh-1 onto gantry-12_04-bee-v1:2",
            "refresh Pending 0%",
            "refresh InProgress 50%",
            "refresh Successful 100%"
        ]
    );
    assert_eq!(fake.calls().last().unwrap(), "ModifyLaunchTemplate gantry-12_04-bee-v1");
}

#[tokio::test]
async fn a_failed_or_late_refresh_is_rolled_back() {
    // Ended by AWS: it rolled back by itself.
    let fake = Fake::serving().with(|s| s.refresh_states = [refresh_state("Failed", 30)].into());
    let error = run_refresh(&fake, Duration::from_secs(5)).await.0.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the instance refresh ended Failed: instances failed their health checks\nAWS rolled it back"
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("RollbackInstanceRefresh") || c.starts_with("Modify")));

    // Still running when the wait ran out: Gantry asks for the rollback.
    let fake = Fake::serving();
    let error = run_refresh(&fake, Duration::from_millis(10)).await.0.unwrap_err();
    assert_eq!(error.to_string(), "the instance refresh had not finished after 10ms\nasked AWS to roll it back");
    assert!(fake.calls().contains(&"RollbackInstanceRefresh refresh-1".to_string()));

    // The rollback refused too: the console is the way.
    let fake = Fake::serving().with(|s| s.always_fails = Some("RollbackInstanceRefresh"));
    let error = run_refresh(&fake, Duration::from_millis(10)).await.0.unwrap_err();
    assert!(error.to_string().ends_with("roll it back in the console"), "{error}");
}

#[tokio::test]
async fn an_endpoint_without_instance_refresh_changes_nothing() {
    let fake = Fake::serving().with(|s| s.refresh_unavailable = true);
    let error = run_refresh(&fake, Duration::from_secs(5)).await.0.unwrap_err();
    assert!(matches!(error, UpdateError::RefreshUnavailable(Error::NotImplemented { .. })), "{error:?}");
    assert_eq!(fake.calls(), ["DescribeInstanceRefreshes 12_04-bee-v1"]);
    assert_old_serving(&fake);
}
