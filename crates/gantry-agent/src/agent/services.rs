//! The agent's services on this node: reconciling them with the world
//! (processes, checks, instances, env files), publishing their health,
//! `gantry service:*` requests, the load balancer's plan, decommissioning,
//! and stopping everything at shutdown.

use std::collections::BTreeMap;

use gantry_api::{Health, Instance, LbApply, LbStatus, keys};
use gantry_client::{ClientError, PutOptions};
use gantry_spec::Service;

use super::runtime::Local;
use gantry_api::now_ms;

use super::world::Unit;
use super::{Agent, AgentEvent, balance, local};
use crate::{envfile, resolve};

impl Agent {
    pub(super) async fn reconcile_services(&mut self) {
        let (units, mut problems) = self.world.local_units(self.config.group.as_deref(), &self.config.services);
        let units: Vec<Running> = units.into_iter().map(Running::from).collect();

        // Withdraw what left first (seed 004: tell everyone before taking it away).
        let leaving: Vec<String> =
            self.locals.keys().filter(|name| !units.iter().any(|u| &u.name == *name)).cloned().collect();
        for name in leaving {
            if let Some(local) = self.locals.remove(&name) {
                self.decommission(local).await;
            }
        }

        let mut reasons = Vec::new();
        // Only the providers' instances: the others are not watched (and
        // copying every instance for every change is what a large fleet cannot afford).
        self.prefixes = self.watch_prefixes();
        let instances = self.watched_instances();
        let lb_on = self.balancer.is_some();
        for unit in &units {
            let service = &unit.service;
            if let Some(drain) = self.draining.remove(&unit.name) {
                drain.abort();
                self.log(&format!("{} is back before its drain ended; not stopping it", unit.name));
            }
            let port = match unit.port.or_else(|| service.port()) {
                Some(port) => port,
                None => match local::assigned_port(&self.config.data_dir, &service.id, self.address) {
                    Ok(port) => port,
                    Err(e) => {
                        problems.push(format!("service {}: assigning a port: {e}", service.id));
                        continue;
                    }
                },
            };
            if self.locals.get(&unit.name).is_some_and(|l| l.service != *service || l.port != port)
                && let Some(mut old) = self.locals.remove(&unit.name)
            {
                self.log(&format!("{}: its definition changed, starting it again", unit.name));
                old.shutdown().await;
            }
            let cwd = if self.locals.contains_key(&unit.name) { None } else { self.release_cwd(&service.id) };
            let control = self.world.service_control.get(&service.id);
            let local = self.locals.entry(unit.name.clone()).or_insert_with(|| Local::new(unit, port, control, cwd));
            let frontends =
                lb_on.then_some(resolve::Frontends { address: &self.machine.address, services: &self.world.services });
            match resolve::resolve_via(service, &self.machine.id, &instances, &self.world.datastores, frontends) {
                Ok(resolution) => {
                    let env = resolve::env_for(service, &self.machine.address, port, &resolution);
                    let (dir, id, file_env) = (self.env_dir.clone(), unit.name.clone(), env.clone());
                    match tokio::task::spawn_blocking(move || envfile::write_env_files(&dir, &id, &file_env)).await {
                        Ok(Ok(true)) => {
                            reasons.push(format!("{} environment changed", unit.name));
                            if let Some(events) = &self.config.events {
                                let _ = events.send(AgentEvent::EnvWritten {
                                    machine: self.machine.id.clone(),
                                    service: unit.name.clone(),
                                });
                            }
                        }
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => problems.push(format!("service {}: {e}", service.id)),
                        Err(e) => problems.push(format!("service {}: writing its env file: {e}", service.id)),
                    }
                    if let Some(note) = local.ensure_process(&env, control, &self.run_settings, &self.wake)
                        && self.config.log
                    {
                        eprintln!("gantry agent {}: {note}", self.machine.id);
                    }
                }
                // The previous env file stays as it was, and so does the process.
                Err(unresolved) => problems.extend(unresolved.iter().map(ToString::to_string)),
            }
            if let Some(problem) = local.ensure_checker(self.address, &self.run_settings, &self.wake) {
                problems.push(problem);
            }
            let health = local.health();
            // Out of rotation while a release switches.
            if self.held_out(&service.id) {
                continue;
            }
            if let Err(e) = self.register(&unit.name, service, &unit.instance, port, health).await {
                problems.push(format!("{}: registering its instance: {e}", unit.name));
            }
        }
        self.apply_service_control();
        let services = distinct_services(&units);
        let lb_problems = self.apply_lb(&services, &instances).await;
        problems.extend(lb_problems);
        if problems != self.problems {
            for problem in problems.iter().filter(|p| !self.problems.contains(p)) {
                self.log(problem);
            }
        }
        self.problems = problems;
        if !reasons.is_empty() {
            self.log(&reasons.join("; "));
            if let Some(listener) = &self.listener {
                listener.trigger(reasons.join("; "));
            }
        }
    }

    /// The instances of the watched `instances/` prefixes.
    pub(super) fn watched_instances(&self) -> Vec<Instance> {
        self.prefixes
            .iter()
            .filter(|p| p.starts_with(keys::INSTANCES))
            .flat_map(|prefix| {
                self.world
                    .instances
                    .range::<String, _>(prefix.clone()..)
                    .take_while(move |(k, _)| k.starts_with(prefix.as_str()))
            })
            .map(|(_, instance)| instance.clone())
            .collect()
    }

    /// A process or check changed: restart what keeps failing its check,
    /// publish the new health, and route around it.
    pub(super) async fn reconcile_health(&mut self) {
        let mut changed = Vec::new();
        let held: Vec<String> = self.releases.keys().filter(|s| self.held_out(s)).cloned().collect();
        for local in self.locals.values_mut() {
            if let Some(note) = local.restart_if_failing()
                && self.config.log
            {
                eprintln!("gantry agent {}: {note}", self.machine.id);
            }
            let health = local.health();
            if self.registered.get(&local.name).is_some_and(|i| i.health != health) && !held.contains(&local.service.id)
            {
                changed.push((local.name.clone(), local.service.clone(), local.instance.clone(), local.port, health));
            }
        }
        for (name, service, instance, port, health) in changed {
            self.log(&format!("{name} is now {}", health.word()));
            if let Err(e) = self.register(&name, &service, &instance, port, health).await {
                self.log(&format!("{name}: publishing its health: {e}"));
            }
        }
        if self.balancer.is_some() {
            let (units, _) = self.world.local_units(self.config.group.as_deref(), &self.config.services);
            let units: Vec<Running> = units.into_iter().map(Running::from).collect();
            let services = distinct_services(&units);
            let instances = self.watched_instances();
            let lb_problems = self.apply_lb(&services, &instances).await;
            for problem in lb_problems.iter().filter(|p| !self.problems.contains(p)) {
                self.log(problem);
            }
        }
    }

    /// `gantry service:stop/start/restart` requests.
    pub(super) fn apply_service_control(&mut self) {
        for local in self.locals.values_mut() {
            if let Some(note) = self.world.service_control.get(&local.service.id).and_then(|c| local.control(c))
                && self.config.log
            {
                eprintln!("gantry agent {}: {note}", self.machine.id);
            }
        }
    }

    /// Renders what this node's balancer serves and applies it; returns the
    /// problems (a refused plan leaves the previous one serving).
    pub(super) async fn apply_lb(&mut self, services: &[Service], instances: &[Instance]) -> Vec<String> {
        let Some(balancer) = self.balancer.as_mut() else { return Vec::new() };
        let local: Vec<&Service> = services.iter().collect();
        let federation = self.config.labels.get("federation").map_or("default", String::as_str);
        let role = balance::Role { address: self.address, external: self.config.external_lb.then_some(federation) };
        let (mut plan, mut problems) = balance::plan(&local, instances, &self.world.services, role);
        let settling = self.session_started.elapsed() < self.config.lease_ttl;
        let registered = instances.iter().map(|i| i.service.clone()).collect();
        let notes = self.last_good.guard(&mut plan, settling, &registered);
        // A node that fronts nothing (and never did) runs no haproxy at all.
        if plan.frontends.is_empty() && self.lb_status.as_ref().is_none_or(|lb| lb.frontends.is_empty()) {
            return problems;
        }
        let result = balancer.apply(&plan).await;
        let name = balancer.name();
        let previous = self.lb_status.take();
        let mut status = LbStatus {
            kind: balancer.kind(),
            frontends: previous.as_ref().map(|p| p.frontends.clone()).unwrap_or_default(),
            notes,
            last_apply: previous.and_then(|p| p.last_apply),
            error: None,
            exporter: balancer.exporter(),
        };
        match result {
            Ok(applied) => {
                status.frontends = plan.frontends.clone();
                if applied.changed {
                    status.last_apply =
                        Some(LbApply { at_ms: now_ms(), check_us: applied.check_us, reload_us: applied.reload_us });
                    if let Some(events) = &self.config.events {
                        let _ = events.send(AgentEvent::LbApplied {
                            machine: self.machine.id.clone(),
                            plan: plan.clone(),
                            applied,
                        });
                    }
                }
            }
            Err(e) => {
                let problem = format!("load balancer ({name}): {e}; the previous configuration keeps serving");
                status.error = Some(problem.clone());
                problems.push(problem);
            }
        }
        self.lb_status = Some(status);
        problems
    }

    /// Publishes the instance of unit `name` (under the lease) if it is new
    /// or changed: `service`'s instance `id` (the machine's id for a static
    /// service, the allocation's for scheduled work).
    pub(super) async fn register(
        &mut self,
        name: &str,
        service: &Service,
        id: &str,
        port: u16,
        health: Health,
    ) -> Result<(), ClientError> {
        let mut values = service.environment.clone();
        values.insert("HOST".into(), self.machine.address.clone());
        values.insert("PORT".into(), port.to_string());
        let provides = service
            .provides
            .iter()
            .filter_map(|(name, template)| Some((name.clone(), template.render(&values).ok()?)))
            .collect();
        let instance = Instance {
            service: service.id.clone(),
            id: id.to_owned(),
            machine: self.machine.id.clone(),
            address: self.machine.address.clone(),
            port,
            properties: self.machine.labels.clone(),
            health,
            federation: service.federation.clone(),
            public: service.public,
            provides,
        };
        if self.registered.get(name) == Some(&instance) {
            return Ok(());
        }
        self.client.put_instance(&instance, PutOptions { lease: self.lease.clone(), ..PutOptions::default() }).await?;
        self.world.instances.insert(keys::instance(&instance.service, &instance.id), instance.clone());
        self.registered.insert(name.to_owned(), instance);
        Ok(())
    }

    /// Seed 004 decommissioning: withdraw the instance now; after the drain
    /// delay stop the process, run the service's `on_delete` hook and remove
    /// its env files.
    pub(super) async fn decommission(&mut self, mut local: Local) {
        let (id, service_id, instance) = (local.name.clone(), local.service.id.clone(), local.instance.clone());
        self.log(&format!(
            "{id} no longer runs here: withdrawing its instance, stopping it in {:?}",
            self.config.drain
        ));
        if let Err(e) = self.client.delete_instance(&service_id, &instance).await {
            self.log(&format!("withdrawing {id}: {e} (its lease will)"));
        }
        self.registered.remove(&id);
        self.world.instances.remove(&keys::instance(&service_id, &instance));
        let (drain, env_dir, machine) = (self.config.drain, self.env_dir.clone(), self.machine.id.clone());
        let script_checks = self.run_settings.script_checks;
        let hurry = self.hurry.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = hurry.notified() => {}
            }
            local.shutdown().await;
            let service = &local.service;
            match &service.on_delete {
                Some(_) if !script_checks => eprintln!(
                    "gantry agent {machine}: on_delete of {} not run: the agent runs without --enable-script-checks",
                    service.id
                ),
                Some(hook) => {
                    let env_file = envfile::conf_path(&env_dir, &local.name);
                    let status =
                        super::releases::run_hook("on_delete", hook, &env_file, service.user.as_deref(), None).await;
                    eprintln!("gantry agent {machine}: on_delete of {}: {status:?}", service.id);
                }
                None => {}
            }
            for path in [envfile::conf_path(&env_dir, &local.name), envfile::json_path(&env_dir, &local.name)] {
                let _ = std::fs::remove_file(path);
            }
        });
        self.draining.insert(id, task);
    }

    /// On shutdown: every process stopped (TERM, then KILL after its grace),
    /// the balancer stopped; nothing of the node is left running.
    pub(super) async fn stop_everything(&mut self) {
        // Departing services stop now rather than after their drain.
        self.hurry.notify_waiters();
        futures::future::join_all(std::mem::take(&mut self.draining).into_values()).await;
        let stops =
            std::mem::take(&mut self.locals).into_values().map(|mut local| async move { local.shutdown().await });
        futures::future::join_all(stops).await;
        if let Some(balancer) = self.balancer.take() {
            balancer.stop().await;
        }
        if let Some(api) = self.api_task.take() {
            api.abort();
        }
    }
    /// Keeps [`local::PROCESSES_FILE`] in step with the running processes.
    pub(super) fn save_processes(&mut self) {
        let now: BTreeMap<String, local::Started> = self
            .locals
            .iter()
            .filter_map(|(id, l)| Some((id.clone(), local::Started::of(l.supervisor.as_ref()?.status().pid?)?)))
            .collect();
        if now != self.saved_processes {
            match local::save_processes(&self.config.data_dir, &now) {
                Ok(()) => self.saved_processes = now,
                Err(e) => self.log(&format!("saving {}: {e}", local::PROCESSES_FILE)),
            }
        }
    }
}

/// A [`Unit`] owning its service, so the world can change while it is reconciled.
pub(super) struct Running {
    pub name: String,
    pub service: Service,
    pub port: Option<u16>,
    pub instance: String,
    pub allocation: Option<String>,
}

impl From<Unit<'_>> for Running {
    fn from(unit: Unit<'_>) -> Running {
        Running {
            name: unit.name,
            service: unit.service.clone(),
            port: unit.port,
            instance: unit.instance,
            allocation: unit.allocation,
        }
    }
}

/// Each service run here once (several allocations of one service share
/// its frontend).
fn distinct_services(units: &[Running]) -> Vec<Service> {
    super::world::distinct(units.iter().map(|u| &u.service)).into_iter().cloned().collect()
}
