//! A node group's autoscaling groups as generations, and the algorithms
//! that move a group from one to the next without downtime (seed 004's
//! "provision a new asg, wait until its nodes are up, turn off the old one
//! after a timeout").
//!
//! Generation `N` of group `G` is the autoscaling group `G-vN`, launched
//! from its own launch template `gantry-G-vN`, which goes when the group
//! goes. (One template per generation rather than versions of one: a
//! generation's launch settings are deleted with it, and moto 5 breaks on
//! the user data of a template's second version.)
//!
//! - [`launch`]: a generation's template and group; on failure, what was
//!   made is deleted again (`autoscale:run`, and the start of [`replace`]).
//! - [`replace`]: the next generation; wait (bounded, a look every `poll`)
//!   until its nodes are in service; let both generations serve for
//!   `settle`, so nodes that depend on the group can move over; one more
//!   look; only then delete the old generations. A failure before that
//!   last step (AWS refusing, the wait running out, nodes lost while
//!   settling, cancellation) deletes the new generation, and the old one
//!   keeps serving.
//! - [`refresh`]: AWS's own instance refresh of the one existing group onto
//!   a new version of its template, rolled back when it fails or times out
//!   (after [`check_refresh`]: moto has none).
//!
//! The algorithms are written against [`Provider`], the few calls they make
//! ([`crate::Aws`] implements it), so that every path is tested against a
//! provider in memory (`tests.rs`); the moto tests of the `gantry` binary
//! are the end-to-end proof.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Asg, AsgSettings, Aws, Error, LaunchSpec, NewAsg, Refresh, RefreshState, TemplateVersion};

/// The calls the algorithms make: launch templates, autoscaling groups,
/// instance refreshes.
pub trait Provider: Sync {
    /// The node group's autoscaling groups (by their `group` tag), oldest first.
    fn group_asgs(&self, group: &str) -> impl Future<Output = Result<Vec<Asg>, Error>> + Send;
    /// A new version of launch template `name` (version 1 creates it).
    fn put_launch_template(
        &self,
        name: &str,
        spec: &LaunchSpec,
    ) -> impl Future<Output = Result<TemplateVersion, Error>> + Send;
    fn set_default_version(&self, template: &TemplateVersion) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes a launch template with its versions; one already gone is fine.
    fn delete_launch_template(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    fn create_asg(&self, asg: &NewAsg) -> impl Future<Output = Result<(), Error>> + Send;
    /// One autoscaling group with its instances; `None` once it is gone.
    fn asg(&self, name: &str) -> impl Future<Output = Result<Option<Asg>, Error>> + Send;
    /// Deletes an autoscaling group; its instances terminate.
    fn delete_asg(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Whether the endpoint has instance refreshes at all (before anything changes).
    fn check_instance_refresh(&self, asg: &str) -> impl Future<Output = Result<(), Error>> + Send;
    fn start_instance_refresh(
        &self,
        asg: &str,
        template: &TemplateVersion,
        warmup_seconds: u64,
    ) -> impl Future<Output = Result<Refresh, Error>> + Send;
    fn instance_refresh(&self, refresh: &Refresh) -> impl Future<Output = Result<RefreshState, Error>> + Send;
    fn rollback_instance_refresh(&self, refresh: &Refresh) -> impl Future<Output = Result<(), Error>> + Send;
}

impl Provider for Aws {
    fn group_asgs(&self, group: &str) -> impl Future<Output = Result<Vec<Asg>, Error>> + Send {
        Aws::group_asgs(self, Some(group))
    }
    fn put_launch_template(
        &self,
        name: &str,
        spec: &LaunchSpec,
    ) -> impl Future<Output = Result<TemplateVersion, Error>> + Send {
        Aws::put_launch_template(self, name, spec)
    }
    fn set_default_version(&self, template: &TemplateVersion) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::set_default_version(self, template)
    }
    fn delete_launch_template(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::delete_launch_template(self, name)
    }
    fn create_asg(&self, asg: &NewAsg) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::create_asg(self, asg)
    }
    fn asg(&self, name: &str) -> impl Future<Output = Result<Option<Asg>, Error>> + Send {
        Aws::asg(self, name)
    }
    fn delete_asg(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::delete_asg(self, name)
    }
    fn check_instance_refresh(&self, asg: &str) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::check_instance_refresh(self, asg)
    }
    fn start_instance_refresh(
        &self,
        asg: &str,
        template: &TemplateVersion,
        warmup_seconds: u64,
    ) -> impl Future<Output = Result<Refresh, Error>> + Send {
        Aws::start_instance_refresh(self, asg, template, warmup_seconds)
    }
    fn instance_refresh(&self, refresh: &Refresh) -> impl Future<Output = Result<RefreshState, Error>> + Send {
        Aws::instance_refresh(self, refresh)
    }
    fn rollback_instance_refresh(&self, refresh: &Refresh) -> impl Future<Output = Result<(), Error>> + Send {
        Aws::rollback_instance_refresh(self, refresh)
    }
}

/// Generation `generation` of a node group's autoscaling group.
pub fn asg_name(group: &str, generation: u32) -> String {
    format!("{group}-v{generation}")
}

/// The launch template of an autoscaling group.
pub fn template_name(asg: &str) -> String {
    format!("gantry-{asg}")
}

/// One past the newest generation among a group's autoscaling groups (1
/// for the first).
pub fn next_generation(group: &str, asgs: &[Asg]) -> u32 {
    let generation = |a: &Asg| a.name.strip_prefix(group)?.strip_prefix("-v")?.parse::<u32>().ok();
    asgs.iter().filter_map(generation).max().map_or(1, |n| n + 1)
}

/// A group's live generations (those AWS is not already deleting: an old
/// generation whose instances are still terminating), and the number of
/// the next one, past all of them (a name in deletion is still taken).
pub async fn live_generations<P: Provider>(provider: &P, group: &str) -> Result<(Vec<Asg>, u32), Error> {
    let mut asgs = provider.group_asgs(group).await?;
    let next = next_generation(group, &asgs);
    asgs.retain(|a| !a.is_deleting());
    Ok((asgs, next))
}

/// How long the algorithms wait, and how often they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// At most this long for the new nodes to be in service (a refresh to finish).
    pub wait: Duration,
    /// Between two looks; the first look is one poll in (AWS launches nothing faster).
    pub poll: Duration,
    /// Both generations serve this long before the old one goes.
    pub settle: Duration,
}

/// What the algorithms report as they go, for the caller to show.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The new generation's autoscaling group exists.
    Created {
        asg: &'a NewAsg,
    },
    /// A look at the new nodes found them changed (`12_04-bee-v2: 1/2 in
    /// service (i-0a Pending/Healthy)`); unchanged looks are not reported.
    Looked {
        elapsed: Duration,
        line: &'a str,
    },
    /// Every new node is in service; both generations now serve for `settle`.
    Settling {
        asg: &'a str,
        settle: Duration,
    },
    /// An old generation was deleted (its instances are terminating).
    DeletedOld {
        asg: &'a str,
    },
    RefreshStarted {
        refresh: &'a Refresh,
        template: &'a TemplateVersion,
    },
    RefreshLooked {
        elapsed: Duration,
        state: &'a RefreshState,
    },
}

/// Why a new generation (or a refresh) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Aws(#[from] Error),
    #[error("looking at {asg}: {error}")]
    Look { asg: String, error: Error },
    #[error("autoscaling group {asg} disappeared")]
    Disappeared { asg: String },
    #[error("not every node was in service after {}: {progress}", humantime::format_duration(*waited))]
    NotInService { waited: Duration, progress: String },
    #[error("the new nodes stopped serving while other nodes updated: {progress}")]
    StoppedServing { progress: String },
    #[error("the instance refresh ended {status}: {}", reason.as_deref().unwrap_or("no reason given"))]
    RefreshEnded { status: String, reason: Option<String> },
    #[error("the instance refresh had not finished after {}", humantime::format_duration(*waited))]
    RefreshTimedOut { waited: Duration },
    /// The caller's cancellation (Ctrl-C, for the CLI), with its reason.
    #[error("interrupted ({0})")]
    Interrupted(&'static str),
}

/// What was done about a failed generation's remains.
#[derive(Debug)]
pub enum Cleanup {
    /// Its autoscaling group (its instances terminate) and its launch template.
    DeletedAsg { asg: String },
    /// Only its launch template had been made.
    DeletedTemplate { template: String },
    /// Deleting failed: both are named, to be deleted by hand.
    Failed { asg: String, template: String, error: Error },
}

impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cleanup::DeletedAsg { asg } => write!(f, "deleted the new autoscaling group {asg}"),
            Cleanup::DeletedTemplate { template } => write!(f, "deleted the launch template {template}"),
            Cleanup::Failed { asg, template, error } => {
                write!(f, "cleaning up {asg} failed too ({error}): delete it and {template} by hand")
            }
        }
    }
}

/// What became of a failed instance refresh.
#[derive(Debug)]
pub enum Rollback {
    /// It had ended: AWS rolls back by itself (`auto_rollback`).
    ByAws,
    Requested,
    Failed(Error),
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollback::ByAws => f.write_str("AWS rolled it back"),
            Rollback::Requested => f.write_str("asked AWS to roll it back"),
            Rollback::Failed(e) => write!(f, "asking AWS to roll it back failed ({e}): roll it back in the console"),
        }
    }
}

/// How [`launch`], [`replace`] and [`refresh`] fail.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// A call failed while nothing needed undoing.
    #[error(transparent)]
    Aws(#[from] Error),
    /// The new generation failed; what was made of it is deleted (or
    /// `cleanup` names what is left), and `serving` keeps serving.
    #[error("{why}\n{cleanup}{}", keeps_serving(serving))]
    Abandoned { why: Failure, cleanup: Cleanup, serving: Vec<String> },
    /// The new generation serves, but an old one could not be deleted.
    #[error(
        "{new} serves, but deleting the old autoscaling group {old} failed ({error}): delete it and {} by hand",
        template_name(old)
    )]
    OldNotDeleted { new: String, old: String, error: Error },
    /// The endpoint has no instance refresh (moto); nothing was changed.
    #[error(transparent)]
    RefreshUnavailable(Error),
    #[error("{why}\n{rollback}")]
    RefreshFailed { why: Failure, rollback: Rollback },
}

fn keeps_serving(serving: &[String]) -> String {
    if serving.is_empty() { String::new() } else { format!("; {} keeps serving", names(serving)) }
}

/// `a, b`.
pub fn names<S: AsRef<str>>(names: &[S]) -> String {
    names.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
}

/// Creates generation `generation` of `group`: its launch template (made
/// the default version) and its autoscaling group. A failure after the
/// template exists deletes what was made.
pub async fn launch<P: Provider>(
    provider: &P,
    group: &str,
    generation: u32,
    spec: &LaunchSpec,
    settings: &AsgSettings,
) -> Result<NewAsg, UpdateError> {
    let name = asg_name(group, generation);
    let template = provider.put_launch_template(&template_name(&name), spec).await?;
    let new = NewAsg { name, template, settings: settings.clone() };
    if let Err(e) = create(provider, &new).await {
        let cleanup = abandon(provider, &new.name).await;
        return Err(UpdateError::Abandoned { why: e.into(), cleanup, serving: Vec::new() });
    }
    Ok(new)
}

async fn create<P: Provider>(provider: &P, new: &NewAsg) -> Result<(), Error> {
    provider.set_default_version(&new.template).await?;
    provider.create_asg(new).await
}

/// One replacement: what the new generation is launched from and with.
#[derive(Debug, Clone, Copy)]
pub struct Replacement<'a> {
    pub group: &'a str,
    /// The live generations (see [`live_generations`]): deleted once the
    /// new one has served through the settle time.
    pub old: &'a [Asg],
    /// The new generation's number.
    pub generation: u32,
    pub spec: &'a LaunchSpec,
    pub settings: &'a AsgSettings,
    pub timing: Timing,
}

/// The outcome of [`replace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub new: NewAsg,
    /// The old autoscaling groups deleted.
    pub deleted: Vec<String>,
}

/// Replaces the group's generations by the next one (see the module's
/// documentation). `cancel` is looked at whenever the replacement waits
/// (between looks, while settling): if it completes first, the replacement
/// fails with [`Failure::Interrupted`] and the new generation is deleted;
/// once the old generations are being deleted it is no longer looked at.
pub async fn replace<P: Provider>(
    provider: &P,
    replacement: &Replacement<'_>,
    cancel: impl Future<Output = &'static str>,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Replaced, UpdateError> {
    let serving = || replacement.old.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    let name = asg_name(replacement.group, replacement.generation);
    let template = provider.put_launch_template(&template_name(&name), replacement.spec).await?;
    let new = NewAsg { name, template, settings: replacement.settings.clone() };
    let mut cancel = std::pin::pin!(cancel);
    let mut waiter = Waiter { provider, timing: replacement.timing, cancel: &mut cancel };
    if let Err(why) = waiter.serve(&new, &mut progress).await {
        let cleanup = abandon(provider, &new.name).await;
        return Err(UpdateError::Abandoned { why, cleanup, serving: serving() });
    }
    let mut deleted = Vec::new();
    for old in replacement.old {
        let gone = async {
            provider.delete_asg(&old.name).await?;
            provider.delete_launch_template(&template_name(&old.name)).await
        };
        if let Err(error) = gone.await {
            return Err(UpdateError::OldNotDeleted { new: new.name, old: old.name.clone(), error });
        }
        progress(Progress::DeletedOld { asg: &old.name });
        deleted.push(old.name.clone());
    }
    Ok(Replaced { new, deleted })
}

/// The failure path: deletes the new autoscaling group if it got that far
/// (its instances terminate), and its launch template.
async fn abandon<P: Provider>(provider: &P, asg: &str) -> Cleanup {
    let template = template_name(asg);
    let deleted = match provider.asg(asg).await {
        Ok(Some(_)) => delete_generation(provider, asg).await.map(|()| Cleanup::DeletedAsg { asg: asg.to_owned() }),
        Ok(None) => provider
            .delete_launch_template(&template)
            .await
            .map(|()| Cleanup::DeletedTemplate { template: template.clone() }),
        Err(e) => Err(e),
    };
    deleted.unwrap_or_else(|error| Cleanup::Failed { asg: asg.to_owned(), template, error })
}

async fn delete_generation<P: Provider>(provider: &P, asg: &str) -> Result<(), Error> {
    provider.delete_asg(asg).await?;
    provider.delete_launch_template(&template_name(asg)).await
}

/// One instance refresh: the one existing group, onto a new version of
/// its launch template.
#[derive(Debug, Clone, Copy)]
pub struct Refreshing<'a> {
    pub asg: &'a Asg,
    pub spec: &'a LaunchSpec,
    /// How long a new instance warms up before it counts (the group's `timeout`).
    pub warmup_seconds: u64,
    /// `wait` and `poll` (a refresh does not settle).
    pub timing: Timing,
}

/// Whether the endpoint has instance refreshes, by a read-only look: an
/// AWS-compatible server without them (moto) is told apart
/// ([`UpdateError::RefreshUnavailable`]) before anything is looked up or
/// made for a refresh. Call it before [`refresh`].
pub async fn check_refresh<P: Provider>(provider: &P, asg: &Asg) -> Result<(), UpdateError> {
    match provider.check_instance_refresh(&asg.name).await {
        Err(e @ Error::NotImplemented { .. }) => Err(UpdateError::RefreshUnavailable(e)),
        other => Ok(other?),
    }
}

/// AWS's instance refresh of one group (healthy capacity kept, rolled back
/// by AWS when it fails); when `timing.wait` runs out (or `cancel`
/// completes), Gantry asks for the rollback. Returns the template version
/// the group now runs, made its template's default.
pub async fn refresh<P: Provider>(
    provider: &P,
    refreshing: &Refreshing<'_>,
    cancel: impl Future<Output = &'static str>,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<TemplateVersion, UpdateError> {
    let asg = &refreshing.asg.name;
    let template = provider.put_launch_template(&template_name(asg), refreshing.spec).await?;
    let refresh = provider.start_instance_refresh(asg, &template, refreshing.warmup_seconds).await?;
    progress(Progress::RefreshStarted { refresh: &refresh, template: &template });
    let mut cancel = std::pin::pin!(cancel);
    let mut waiter = Waiter { provider, timing: refreshing.timing, cancel: &mut cancel };
    if let Err(why) = waiter.until_refreshed(&refresh, &mut progress).await {
        let rollback = match why {
            Failure::RefreshEnded { .. } => Rollback::ByAws,
            _ => match provider.rollback_instance_refresh(&refresh).await {
                Ok(()) => Rollback::Requested,
                Err(e) => Rollback::Failed(e),
            },
        };
        return Err(UpdateError::RefreshFailed { why, rollback });
    }
    provider.set_default_version(&template).await?;
    Ok(template)
}

/// The waiting half of the algorithms: looks, pauses, cancellation.
struct Waiter<'a, P, C> {
    provider: &'a P,
    timing: Timing,
    cancel: &'a mut C,
}

impl<P: Provider, C: Future<Output = &'static str> + Unpin> Waiter<'_, P, C> {
    /// Creates the new group, waits until it serves, lets other nodes
    /// update, checks it once more.
    async fn serve(&mut self, new: &NewAsg, progress: &mut impl FnMut(Progress<'_>)) -> Result<(), Failure> {
        create(self.provider, new).await?;
        progress(Progress::Created { asg: new });
        self.until_in_service(&new.name, progress).await?;
        progress(Progress::Settling { asg: &new.name, settle: self.timing.settle });
        self.pause(self.timing.settle).await?;
        let asg = self.look(&new.name).await?;
        if !asg.is_ready() {
            return Err(Failure::StoppedServing { progress: progress_line(&asg) });
        }
        Ok(())
    }

    /// Looks every `poll`, at most `wait` in all, until every instance the
    /// group wants is in service and healthy.
    async fn until_in_service(&mut self, asg: &str, progress: &mut impl FnMut(Progress<'_>)) -> Result<(), Failure> {
        let start = Instant::now();
        let deadline = start + self.timing.wait;
        let mut shown = String::new();
        loop {
            self.pause(self.timing.poll.min(deadline.saturating_duration_since(Instant::now()))).await?;
            let current = self.look(asg).await?;
            let line = progress_line(&current);
            if line != shown {
                progress(Progress::Looked { elapsed: start.elapsed(), line: &line });
                shown = line;
            }
            if current.is_ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::NotInService { waited: self.timing.wait, progress: shown });
            }
        }
    }

    /// Looks every `poll`, at most `wait` in all, until the refresh finishes.
    async fn until_refreshed(
        &mut self,
        refresh: &Refresh,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> Result<(), Failure> {
        let start = Instant::now();
        let deadline = start + self.timing.wait;
        loop {
            self.pause(self.timing.poll.min(deadline.saturating_duration_since(Instant::now()))).await?;
            let state = self.provider.instance_refresh(refresh).await?;
            progress(Progress::RefreshLooked { elapsed: start.elapsed(), state: &state });
            match (state.finished, state.succeeded) {
                (true, true) => return Ok(()),
                (true, false) => return Err(Failure::RefreshEnded { status: state.status, reason: state.reason }),
                _ if Instant::now() >= deadline => return Err(Failure::RefreshTimedOut { waited: self.timing.wait }),
                _ => {}
            }
        }
    }

    async fn look(&self, asg: &str) -> Result<Asg, Failure> {
        match self.provider.asg(asg).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Failure::Disappeared { asg: asg.to_owned() }),
            Err(error) => Err(Failure::Look { asg: asg.to_owned(), error }),
        }
    }

    /// Sleeps, unless the cancellation comes first.
    async fn pause(&mut self, duration: Duration) -> Result<(), Failure> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            why = &mut *self.cancel => Err(Failure::Interrupted(why)),
        }
    }
}

/// `12_04-bee-v2: 1/2 in service (i-0a Pending/Healthy)`.
pub fn progress_line(asg: &Asg) -> String {
    let waiting: Vec<String> = asg
        .instances
        .iter()
        .filter(|i| !i.is_in_service())
        .map(|i| format!("{} {}/{}", i.id, i.lifecycle, i.health))
        .collect();
    let mut line = format!("{}: {}/{} in service", asg.name, asg.in_service(), asg.desired);
    if !waiting.is_empty() {
        line.push_str(&format!(" ({})", waiting.join(", ")));
    }
    line
}
