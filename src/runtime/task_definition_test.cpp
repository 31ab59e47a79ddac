#include "runtime/task_definition.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace cutover;
using ::testing::ElementsAre;

namespace {

std::shared_ptr<const config::Config> parse(const std::string& task) {
  const std::string text = R"(
version: 1
pipeline:
  stages:
    - { name: build, run: make, artifacts: dist }
services:
  web:
    artifact: build
    listeners: { production: 127.0.0.1:8000 }
)" + task;
  auto r = config::parse_config(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : nullptr;
}

}  // namespace

TEST(TaskDefinition, SameMeaningSameJsonAndEveryFieldCounts) {
  auto a = parse(R"(    task:
      count: 2
      containers:
        - name: app
          command: [dist/server, --port, "${PORT}"]
          env: { B: "2", A: "1" }
          secrets: { DB: web/db }
          health: { http: /health, interval: 5s }
          limits: { memory: 512MiB }
)");
  // Same content written differently (key order, flow style, a default spelled out).
  auto same = parse(R"(    task:
      containers:
        - command: [dist/server, --port, "${PORT}"]
          name: app
          env:
            A: "1"
            B: "2"
          health: { interval: 5000ms, http: /health, retries: 3 }
          secrets: { DB: web/db }
          limits: { memory: 536870912 }
      count: 2
)");
  ASSERT_TRUE(a && same);
  const auto ja = runtime::task_definition(a->services[0]);
  EXPECT_EQ(ja.dump(), runtime::task_definition(same->services[0]).dump());
  EXPECT_TRUE(runtime::diff_task_definitions(ja, ja).empty());
  EXPECT_EQ(ja["containers"][0]["secrets"]["DB"], "web/db");  // the name, never a value
  EXPECT_EQ(ja["containers"][0]["health"]["interval_ms"], 5000);
  EXPECT_EQ(ja["driver"], "process");

  auto b = parse(R"(    task:
      count: 3
      containers:
        - name: app
          command: [dist/server, --port, "${PORT}"]
          env: { A: "1", C: "3" }
          secrets: { DB: web/db }
          health: { http: /health, interval: 5s }
          stop_timeout: 10s
)");
  ASSERT_TRUE(b);
  const auto jb = runtime::task_definition(b->services[0]);
  EXPECT_NE(ja.dump(), jb.dump());
  EXPECT_THAT(runtime::diff_task_definitions(ja, jb),
              ElementsAre("containers[app].env.B: \"2\" -> (none)",
                          "containers[app].env.C: (none) -> \"3\"",
                          "containers[app].limits.memory: 536870912 -> (none)",
                          "containers[app].stop_timeout_ms: 30000 -> 10000", "count: 2 -> 3"));
}

TEST(TaskDefinition, ContainersAreMatchedByName) {
  auto a = parse(R"(    task:
      containers:
        - { name: app, command: [a] }
        - { name: side, command: [s] }
)");
  auto b = parse(R"(    task:
      containers:
        - { name: side, command: [s] }
        - { name: app, command: [b] }
)");
  ASSERT_TRUE(a && b);
  EXPECT_THAT(runtime::diff_task_definitions(runtime::task_definition(a->services[0]),
                                             runtime::task_definition(b->services[0])),
              ElementsAre("containers[app].command: [\"a\"] -> [\"b\"]"));
}
