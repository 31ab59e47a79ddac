// Task definitions (ECS words): the part of a service's configuration that defines what its tasks
// run — driver, count and containers (command, image, port, env, secret names, liveness, stop
// signal and timeout, limits). Every change to it makes a new immutable revision ("web:7"), kept
// by the store; these functions give the canonical JSON that is hashed and stored, and the diff
// that `cutover task-defs SERVICE --diff A B` shows.
//
// Canonical: keys sorted (nlohmann::json objects are ordered maps), durations in milliseconds,
// defaults written out, so that two configurations that run the same thing give the same text
// and a changed default shows up as a change. Secret values never appear: only their names.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

namespace cutover::runtime {

nlohmann::json task_definition(const config::Service& service);

// Line per difference, in key order: "containers[app].env.APP_ENV: \"a\" -> \"b\"",
// "count: 2 -> 3", "containers[app].limits.memory: (none) -> 536870912". Containers are matched
// by name. Empty when equal.
std::vector<std::string> diff_task_definitions(const nlohmann::json& from,
                                               const nlohmann::json& to);

}  // namespace cutover::runtime
