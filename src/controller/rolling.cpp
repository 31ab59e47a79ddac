// The imperative shell around deploy::decide_rolling (the `rolling` strategy): the same outbox
// discipline as deployer.cpp (each decision and its commands persisted in one transaction, then
// executed, results fed back as events), with tasks started and stopped one at a time.
//
// Tasks keep the blue/green colors of DESIGN.md §6: blue is the live color (the previous
// release), green the other one. The proxy weighs the two target groups by their healthy task
// counts (decide_rolling computes the weight), so each healthy task gets an equal share. A blue
// task chosen for stopping leaves the snapshot first (Routing::draining), is drained by the
// proxy, then stopped.
#include <algorithm>
#include <deque>
#include <map>

#include <nlohmann/json.hpp>

#include "controller/internal.hpp"
#include "core/log.hpp"
#include "deploy/rolling.hpp"

namespace cutover::controller {

using nlohmann::json;

namespace {

using deploy::Color;
using deploy::RollingCommandKind;
using deploy::RollingEventKind;
using deploy::RollingPhase;
using deploy::TaskState;

int count_state(const std::vector<deploy::TaskSlot>& v, TaskState s) {
  return static_cast<int>(
      std::count_if(v.begin(), v.end(), [s](const auto& t) { return t.state == s; }));
}

// "green 3/4 healthy, blue 1" as `cutover status` shows it.
std::string progress(const deploy::RollingDeployment& d) {
  const int blue_alive = static_cast<int>(std::count_if(
      d.blue.begin(), d.blue.end(), [](const auto& t) { return t.state != TaskState::Stopped; }));
  return "green " + std::to_string(deploy::healthy(d, Color::Green)) + "/" +
         std::to_string(d.desired) + " healthy, blue " + std::to_string(blue_alive) +
         ", failed tasks " + std::to_string(d.green_failures) + "/" +
         std::to_string(d.circuit_breaker_threshold);
}

json state_json(const deploy::RollingDeployment& d, const core::Clock& clock) {
  json deadline = nullptr;
  if (d.deadline) {
    deadline = core::to_unix_ms(
        clock.wall() + std::chrono::duration_cast<core::Duration>(*d.deadline - clock.now()));
  }
  return json{{"strategy", "rolling"},
              {"deadline_unix_ms", deadline},
              {"phase", std::string(deploy::to_string(d.phase))},
              {"weight", d.weight},
              {"desired", d.desired},
              {"max_running", deploy::max_running(d)},
              {"min_healthy", deploy::min_healthy(d)},
              {"running", deploy::running(d)},
              {"green_healthy", deploy::healthy(d, Color::Green)},
              {"blue_healthy", deploy::healthy(d, Color::Blue)},
              {"green_starting", count_state(d.green, TaskState::Starting)},
              {"green_failures", d.green_failures},
              {"threshold", d.circuit_breaker_threshold},
              {"alarms", d.has_alarms ? std::string(deploy::to_string(d.alarms)) : "none"},
              {"progress", progress(d)},
              {"reason", d.reason}};
}

json command_json(const deploy::RollingCommand& c) {
  json j{{"kind", std::string(deploy::to_string(c.kind))}};
  if (c.kind == RollingCommandKind::StartTask || c.kind == RollingCommandKind::StopTask) {
    j["color"] = std::string(deploy::to_string(c.color));
    j["task"] = c.task;
  }
  if (c.kind == RollingCommandKind::SetWeights) {
    j["weight"] = c.weight;
    j["snapshot"] = c.snapshot;
  }
  return j;
}

store::DeploymentStatus status_of(RollingPhase p) {
  switch (p) {
    case RollingPhase::Succeeded:
      return store::DeploymentStatus::Succeeded;
    case RollingPhase::Failed:
      return store::DeploymentStatus::Failed;
    case RollingPhase::RolledBack:
      return store::DeploymentStatus::RolledBack;
    case RollingPhase::Stopped:
      return store::DeploymentStatus::Stopped;
    default:
      return store::DeploymentStatus::InProgress;
  }
}

std::optional<RollingEventKind> operator_kind(deploy::EventKind k) {
  switch (k) {
    case deploy::EventKind::Rollback:
      return RollingEventKind::Rollback;
    case deploy::EventKind::Abort:
      return RollingEventKind::Abort;
    case deploy::EventKind::Promote:
      return RollingEventKind::Promote;
    default:
      return std::nullopt;
  }
}

}  // namespace

void Controller::Impl::deploy_rolling(const config::Service& service,
                                      const store::Release& release) {
  auto log = core::logger();
  auto live = store->live(service.name);
  if (!live) {
    log->error("deploy: {}: {}", service.name, live.error().message);
    return;
  }
  const config::Deployment& spec = service.deployment;
  deploy::RollingDeployment d;
  d.service = service.name;
  d.release_id = release.id;
  Color green_color = Color::Blue;  // a first deployment runs as blue, as in deploy_release
  std::optional<store::Release> previous;
  if (live->has_value()) {
    d.previous_release_id = (*live)->release_id;
    green_color = (*live)->color == "blue" ? Color::Green : Color::Blue;
    auto rel = store->get_release(*d.previous_release_id);
    if (rel && rel->has_value()) previous = **rel;
  }
  // Blue tasks restarted by a rollback run as the previous release was configured (its env,
  // command, health), not as this commit's configuration says.
  std::shared_ptr<const config::Config> previous_config;
  const config::Service* previous_service = nullptr;
  if (previous) {
    if (auto pc = config_at(previous->commit_sha); pc) {
      previous_config = *pc;
      previous_service = previous_config->find_service(service.name);
    }
  }
  const Color blue_color = deploy::other(green_color);
  const std::string green = std::string(deploy::to_string(green_color));
  const std::string blue = std::string(deploy::to_string(blue_color));
  // The machine speaks of Blue (what runs now) and Green (the new release); the controller's
  // colors alternate between deployments.
  const auto actual = [&](Color c) { return c == Color::Green ? green : blue; };

  d.desired = service.task.count;
  d.min_healthy_percent = spec.min_healthy_percent;
  d.max_percent = spec.max_percent;
  d.circuit_breaker_threshold = spec.circuit_breaker_threshold;
  d.has_alarms = !spec.alarms.empty();
  d.rollback_on_failure = spec.auto_rollback.count(config::RollbackTrigger::Failure) > 0;
  d.rollback_on_alarm = spec.auto_rollback.count(config::RollbackTrigger::Alarm) > 0;
  const auto& th = service.target_health;
  core::Duration start_period{0};
  core::Duration stop_timeout{0};
  for (const auto& c : service.task.containers) {
    start_period = std::max(start_period, c.health.start_period);
    stop_timeout = std::max(stop_timeout, c.stop_timeout);
  }
  d.task_timeout = start_period + (th.interval + th.timeout) * (th.healthy_threshold + 2) +
                   std::chrono::seconds(30);
  d.stop_timeout = spec.drain_timeout + stop_timeout + std::chrono::seconds(10);
  d.apply_timeout = std::chrono::seconds(30);

  // Blue: the running tasks of the live color, in a stable order; index = position.
  std::map<Color, std::vector<std::string>> ids;  // task ids by machine color and index
  if (d.previous_release_id) {
    auto running = store->list_running_tasks(service.name);
    if (!running) {
      log->error("deploy: {}: {}", service.name, running.error().message);
      return;
    }
    auto states = target_states();
    for (const auto& t : *running) {
      if (t.color != blue) continue;
      ids[Color::Blue].push_back(t.task_id);
    }
    std::sort(ids[Color::Blue].begin(), ids[Color::Blue].end());
    for (const auto& id : ids[Color::Blue]) {
      const bool ok = states && states->count(id) && states->at(id) == "healthy";
      d.blue.push_back(
          {.state = ok ? TaskState::Healthy : TaskState::Unhealthy, .deadline = std::nullopt});
    }
  }

  store::Deployment rec;
  rec.service = service.name;
  rec.release_id = release.id;
  rec.previous_release_id = d.previous_release_id;
  rec.phase = std::string(deploy::to_string(d.phase));
  rec.state_json = state_json(d, clock).dump();
  auto inserted = store->insert_deployment(rec);
  if (!inserted) {
    log->error("deploy: {}: {}", service.name, inserted.error().message);
    return;
  }
  d.id = inserted->id;
  // notify_deployment takes a blue/green deployment; these are the fields it reads.
  deploy::Deployment note;
  note.id = d.id;
  note.service = d.service;
  note.release_id = d.release_id;
  (void)store->append_audit("controller", "deploy", "service:" + service.name,
                            json{{"deployment", d.id},
                                 {"release", release.id},
                                 {"commit", release.commit_sha},
                                 {"strategy", "rolling"}}
                                .dump());
  log->info(
      "deploy: {} of {} started (rolling, count {}, min_healthy {}%, max {}%): release {} "
      "({}) as {}",
      d.id, service.name, d.desired, d.min_healthy_percent, d.max_percent, release.id,
      release.commit_sha.substr(0, 7), green);
  notify_deployment("deployment.started", note, release, "in_progress");

  auto cfg = config_at(release.commit_sha);
  Routing before = routing[service.name];
  Routing& route = routing[service.name];
  std::shared_ptr<const config::Config> new_config = cfg ? *cfg : nullptr;
  if (new_config && !route.config) route.config = new_config;

  std::deque<deploy::RollingEvent> events{{.kind = RollingEventKind::Start}};
  bool watching_alarms = false;
  std::optional<alarm::Verdict> last_verdict;
  core::TimePoint next_alarm_check{};
  core::TimePoint next_health_check{};
  core::TimePoint next_fetch = clock.now() + opts.poll_interval;
  int64_t alarm_second = 0;
  std::optional<core::TimePoint> timer;
  const auto task_event = [&](RollingEventKind kind, Color c, size_t i, std::string detail = {}) {
    events.push_back({.kind = kind, .detail = std::move(detail), .color = c, .task = i});
  };

  // Health of every task the machine waits on or counts, as the proxy and the supervisor see it.
  const auto poll_health = [&] {
    auto states = target_states();
    if (!states) return;
    for (Color c : {Color::Blue, Color::Green}) {
      const auto& slots = c == Color::Blue ? d.blue : d.green;
      for (size_t i = 0; i < slots.size() && i < ids[c].size(); ++i) {
        const std::string& id = ids[c][i];
        if (id.empty()) continue;
        const TaskState s = slots[i].state;
        if (s != TaskState::Starting && s != TaskState::Healthy && s != TaskState::Unhealthy) {
          continue;
        }
        auto t = store->get_task(id);
        if (t && t->has_value() && (*t)->status == store::TaskStatus::Failed) {
          task_event(RollingEventKind::TaskFailed, c, i, "crash loop (the runtime gave up)");
          continue;
        }
        auto it = states->find(id);
        const std::string health = it == states->end() ? "" : it->second;
        if (health == "healthy" && s != TaskState::Healthy) {
          task_event(RollingEventKind::TaskHealthy, c, i);
        } else if (health == "unhealthy" && s == TaskState::Healthy) {
          task_event(RollingEventKind::TaskUnhealthy, c, i, "failed its target health checks");
        }
      }
    }
  };

  // Stops tasks together: out of the snapshot, drained (up to drain_timeout), then stopped.
  const auto stop_batch = [&](const std::vector<std::pair<Color, size_t>>& doomed) {
    std::vector<std::pair<std::pair<Color, size_t>, store::TaskRecord>> records;
    for (const auto& [c, i] : doomed) {
      const std::string id = i < ids[c].size() ? ids[c][i] : "";
      auto t = id.empty() ? core::Result<std::optional<store::TaskRecord>>(std::nullopt)
                          : store->get_task(id);
      if (t && t->has_value()) {
        records.push_back({{c, i}, **t});
        route.draining.insert(id);
      } else {
        task_event(RollingEventKind::TaskStopped, c, i);  // never started: nothing to stop
      }
    }
    if (records.empty()) return;
    (void)publish_routes();
    const auto deadline = clock.now() + spec.drain_timeout;
    while (clock.now() < deadline && !stop_requested()) {
      auto states = target_states();
      if (!states) break;
      bool draining = false;
      for (const auto& r : records) draining |= states->count(r.second.task_id) > 0;
      if (!draining) break;
      wait_until(clock.now() + std::chrono::milliseconds(100));
    }
    for (const auto& [slot, r] : records) {
      runtime::Task task = to_runtime_task(r);
      if (!service.task.containers.empty()) {
        task.stop_signal = service.task.containers.front().stop_signal_number;
        task.stop_timeout = service.task.containers.front().stop_timeout;
      }
      if (r.status == store::TaskStatus::Running || r.status == store::TaskStatus::Failed) {
        if (auto s = stop_task(task); !s) {
          log->warn("deploy: {}: stopping task {}: {}", d.id, r.task_id, s.error().message);
        }
      }
      (void)store->update_task_status(r.task_id, store::TaskStatus::Stopped);
      route.draining.erase(r.task_id);
      task_event(RollingEventKind::TaskStopped, slot.first, slot.second);
    }
    (void)publish_routes();
  };

  while (!deploy::is_terminal(d.phase)) {
    if (events.empty()) {
      if (stop_requested()) {
        log->warn("deploy: {} left in {} at shutdown; the next start settles it", d.id,
                  deploy::to_string(d.phase));
        return;
      }
      {
        std::lock_guard lock(mu);
        auto it = operator_events.find(service.name);
        if (it != operator_events.end()) {
          for (auto& e : it->second) {
            if (auto k = operator_kind(e.kind)) {
              events.push_back({.kind = *k, .detail = std::move(e.detail)});
            }
          }
          operator_events.erase(it);
        }
      }
      const auto now = clock.now();
      if (now >= next_health_check) {
        next_health_check = now + std::chrono::milliseconds(200);
        poll_health();
      }
      if (watching_alarms && now >= next_alarm_check) {
        int64_t second = 0;
        auto ev = evaluate_alarms(service, green, blue, &second);
        if (!ev) {
          next_alarm_check = now + std::chrono::seconds(1);
        } else if (second <= alarm_second) {
          next_alarm_check = now + std::chrono::milliseconds(20);
        } else {
          alarm_second = second;
          next_alarm_check = now + std::chrono::milliseconds(500);
          if (ev->verdict != last_verdict || ev->verdict == alarm::Verdict::Alarm) {
            last_verdict = ev->verdict;
            events.push_back({.kind = RollingEventKind::AlarmVerdict,
                              .detail = ev->summary,
                              .alarm = ev->verdict == alarm::Verdict::Ok ? deploy::AlarmState::Ok
                                       : ev->verdict == alarm::Verdict::Alarm
                                           ? deploy::AlarmState::Alarm
                                           : deploy::AlarmState::InsufficientData});
          }
        }
      }
      poll_source_if_due(next_fetch);
      if (events.empty() && timer && now >= *timer) {
        events.push_back({.kind = RollingEventKind::Timer});
        timer.reset();
      }
      if (events.empty()) {
        auto wake = clock.now() + std::chrono::milliseconds(100);
        if (watching_alarms) wake = std::min(wake, next_alarm_check);
        wait_until(wake);
        continue;
      }
    }
    const deploy::RollingEvent ev = events.front();
    events.pop_front();
    deploy::RollingDecision dec = deploy::decide_rolling(d, ev, clock.now());
    if (dec.commands.empty() && dec.next.phase == d.phase) {
      d = dec.next;
      continue;
    }

    std::vector<int64_t> command_ids;
    auto tx = store->transaction([&](store::Store& s) -> core::Result<void> {
      store::DeploymentUpdate u;
      u.status = status_of(dec.next.phase);
      u.phase = std::string(deploy::to_string(dec.next.phase));
      u.state_json = state_json(dec.next, clock).dump();
      u.reason = dec.next.reason;
      if (auto r = s.update_deployment(d.id, u); !r) return r.error();
      json detail{{"detail", ev.detail},
                  {"phase", u.phase},
                  {"running", deploy::running(dec.next)},
                  {"healthy", deploy::healthy(dec.next, Color::Green) +
                                  deploy::healthy(dec.next, Color::Blue)},
                  {"green_healthy", deploy::healthy(dec.next, Color::Green)},
                  {"weight", dec.next.weight}};
      if (ev.kind != RollingEventKind::Start && ev.kind != RollingEventKind::Timer &&
          ev.kind != RollingEventKind::WeightsApplied &&
          ev.kind != RollingEventKind::WeightsFailed) {
        detail["color"] = actual(ev.color);
        detail["task"] = ev.task;
      }
      if (auto r = s.append_deployment_event(d.id, std::string(deploy::to_string(ev.kind)),
                                             detail.dump());
          !r) {
        return r.error();
      }
      for (const auto& c : dec.commands) {
        auto id = s.enqueue_command(d.id, command_json(c).dump());
        if (!id) return id.error();
        command_ids.push_back(*id);
      }
      return {};
    });
    if (!tx) {
      log->error("deploy: {}: cannot persist the decision: {}", d.id, tx.error().message);
      return;
    }
    if (dec.next.phase != d.phase) {
      log->info("deploy: {} {} -> {}{}", d.id, deploy::to_string(d.phase),
                deploy::to_string(dec.next.phase),
                dec.next.reason.empty() ? "" : " (" + dec.next.reason + ")");
    }
    d = dec.next;
    note.reason = d.reason;

    std::vector<std::pair<Color, size_t>> stops;
    for (size_t i = 0; i < dec.commands.size(); ++i) {
      const deploy::RollingCommand& c = dec.commands[i];
      switch (c.kind) {
        case RollingCommandKind::StartTask: {
          auto& v = ids[c.color];
          if (v.size() <= c.task) v.resize(c.task + 1);
          const bool is_green = c.color == Color::Green;
          if (!is_green && (!previous || previous_service == nullptr)) {
            task_event(RollingEventKind::TaskFailed, c.color, c.task,
                       "the previous release or its configuration is not available");
            break;
          }
          auto started = is_green ? start_tasks(service, release, green_color, 1)
                                  : start_tasks(*previous_service, *previous, blue_color, 1);
          if (!started) {
            task_event(RollingEventKind::TaskFailed, c.color, c.task, started.error().message);
            break;
          }
          v[c.task] = started->front().task_id;
          // Its group is in the snapshot (health-checked) even without production weight.
          route.weights.try_emplace(actual(c.color), 0);
          if (auto r = publish_routes(); !r) {
            log->warn("deploy: {}: {}", d.id, r.error().message);  // the health wait times out
          }
          break;
        }
        case RollingCommandKind::StopTask:
          stops.emplace_back(c.color, c.task);
          break;
        case RollingCommandKind::SetWeights: {
          // The live release is the one that serves all of production: recorded before the
          // snapshot moves everything to green, and given back to blue before a rollback one.
          Routing saved = route;
          const int w = c.weight;
          std::optional<std::pair<std::string, std::string>> live_now;
          if (w >= proxy::kWeightTotal) {
            live_now = {release.id, green};
          } else if (d.previous_release_id) {
            live_now = {*d.previous_release_id, blue};
          }
          const auto refused = [&](const std::string& why) {
            events.push_back(
                {.kind = RollingEventKind::WeightsFailed, .detail = why, .snapshot = c.snapshot});
          };
          if (live_now) {
            if (auto r = store->set_live(service.name, live_now->first, live_now->second); !r) {
              refused(r.error().message);
              break;
            }
          }
          if (w > 0 && new_config) route.config = new_config;
          if (w == 0 && before.config) route.config = before.config;
          route.weights[green] = w;
          if (d.previous_release_id) route.weights[blue] = proxy::kWeightTotal - w;
          if (auto r = publish_routes(); !r) {
            route = saved;
            if (w >= proxy::kWeightTotal && d.previous_release_id) {
              (void)store->set_live(service.name, *d.previous_release_id, blue);
            }
            refused(r.error().message);
            break;
          }
          log->info("deploy: {}: production {} {}%{} ({})", d.id, green, w / 100.0,
                    d.previous_release_id
                        ? " / " + blue + " " + std::to_string((proxy::kWeightTotal - w) / 100) + "%"
                        : std::string(),
                    progress(d));
          events.push_back(
              {.kind = RollingEventKind::WeightsApplied, .weight = w, .snapshot = c.snapshot});
          break;
        }
        case RollingCommandKind::WatchAlarms:
          watching_alarms = true;
          break;
        case RollingCommandKind::ArmTimer:
          timer = c.at;
          break;
        case RollingCommandKind::Finish:
          break;  // after the stops below
      }
    }
    if (!stops.empty()) stop_batch(stops);
    if (deploy::is_terminal(d.phase)) {
      // The color that serves nothing any more leaves the snapshot.
      const bool ok = d.phase == RollingPhase::Succeeded;
      if (ok) {
        route.weights.erase(blue);
      } else if (d.weight == 0) {
        route.weights.erase(green);
        if (!before.config) route = before;  // nothing was live
      }
      (void)publish_routes();
      const std::string outcome(deploy::to_string(d.phase));
      (void)store->append_audit("controller", ok ? "deploy.succeeded" : "deploy.ended",
                                "service:" + service.name,
                                json{{"deployment", d.id}, {"reason", d.reason}}.dump());
      notify_deployment(ok ? "deployment.succeeded"
                        : d.phase == RollingPhase::RolledBack || d.phase == RollingPhase::Stopped
                            ? "deployment.rolled_back"
                            : "deployment.failed",
                        note, release, outcome);
      if (ok) {
        log->info("deploy: {} of {} succeeded: {} serves production on {} tasks", d.id,
                  service.name, release.commit_sha.substr(0, 7), d.desired);
      } else {
        log->warn("deploy: {} of {} ended {}: {}", d.id, service.name, outcome, d.reason);
      }
    }
    for (int64_t id : command_ids) (void)store->mark_command_done(id);
  }
}

}  // namespace cutover::controller
