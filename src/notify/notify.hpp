// notify: outbound webhooks on execution and deployment state changes (issue 6), as Slack
// incoming-webhook payloads ({"text": ...}) or generic JSON, optionally signed with
// `X-Cutover-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//
// Delivery never blocks the caller: notify() renders the payloads and appends them to a bounded
// queue served by one background thread. A full queue drops its oldest delivery (counted, logged).
// A delivery is retried with exponential backoff (initial_backoff, x2 each time) up to
// max_attempts on a transport error, a 5xx or a 429; any other status ends it. Each attempt has
// a deadline (timeout) covering resolve, connect, TLS handshake, write and read.
//
//   notify() ──▶ [queue ≤ queue_limit] ──▶ worker: POST ──2xx──▶ delivered
//                      ▲                          │ 5xx/429/transport, attempts left
//                      └──── due after backoff ◀──┘ otherwise ──▶ failed (logged)
//
// Thread-safety: every public method may be called from any thread. The destructor stops the
// worker after its current attempt (at most `timeout`); undelivered notifications are dropped.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/result.hpp"

namespace cutover::notify {

enum class Format { Json, Slack };

// One receiver, with its secrets already resolved.
struct Target {
  std::string url;  // http:// or https:// (core::parse_http_url)
  Format format = Format::Json;
  std::vector<std::string> events;  // names as in config::kNotificationEvents; empty = all
  std::string hmac_key;             // empty = no signature header
};

// A state change. `event` is "execution.started", "deployment.rolled_back", ...
struct Event {
  std::string event;
  std::string service;  // deployments; empty for executions
  std::string execution_id;
  std::string deployment_id;
  std::string commit;  // full SHA
  std::string status;  // the new status: running, succeeded, failed, waiting, rolled_back ...
  std::string reason;  // why it failed or rolled back; may be empty
  core::WallTime time{};
};

// The request body for target's format.
std::string render(Format format, const Event& event);
// "sha256=<hex>" of body under key.
std::string signature(std::string_view key, std::string_view body);

struct Options {
  size_t queue_limit = 1000;
  int max_attempts = 5;
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds timeout{10000};  // per attempt
};

struct Stats {
  uint64_t queued = 0;     // deliveries accepted into the queue
  uint64_t delivered = 0;  // answered 2xx
  uint64_t failed = 0;     // gave up: non-retryable status or attempts exhausted
  uint64_t dropped = 0;    // evicted from a full queue
  uint64_t retries = 0;    // attempts after the first
  size_t pending = 0;      // in the queue now (including one being sent)
};

class Notifier {
 public:
  explicit Notifier(Options options = {});
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Replaces the receivers (the configuration of the latest commit). A target whose URL does not
  // parse is left out with an error naming its index; the others are kept.
  core::Result<void> configure(std::vector<Target> targets);
  // Queues one delivery per target subscribed to event.event. Never blocks on the network.
  void notify(const Event& event);
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cutover::notify
