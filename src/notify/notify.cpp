#include "notify/notify.hpp"

#include <openssl/hmac.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "core/url.hpp"

namespace cutover::notify {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr size_t kResponseLimit = 64 << 10;  // we only need the status; bound what we read

std::string slack_text(const Event& e) {
  std::string subject = e.event.starts_with("execution.")
                            ? "Execution " + e.execution_id
                            : "Deployment " + e.deployment_id + " of " + e.service;
  std::string what;
  if (e.event == "execution.started" || e.event == "deployment.started") {
    what = "started";
  } else if (e.event.ends_with(".succeeded")) {
    what = "succeeded";
  } else if (e.event.ends_with(".failed")) {
    what = "failed";
  } else if (e.event == "execution.waiting_for_approval") {
    what = "is waiting for approval (`cutover approve " + e.execution_id + "`)";
  } else if (e.event == "deployment.rolled_back") {
    what = "rolled back";
  } else {
    what = e.status;
  }
  std::string text = subject + " " + what;
  if (!e.commit.empty()) text += " (commit " + e.commit.substr(0, 7) + ")";
  if (!e.reason.empty()) text += ": " + e.reason;
  return text;
}

struct PostResult {
  int status = 0;  // 0 = transport failure
  std::string error;
};

bool retryable(const PostResult& r) { return r.status == 0 || r.status == 429 || r.status >= 500; }

template <typename Stream>
asio::awaitable<void> exchange(Stream& stream, const http::request<http::string_body>& req,
                               PostResult& out) {
  auto [wec, wn] = co_await http::async_write(stream, req, kTuple);
  if (wec) {
    out.error = "sending the request: " + wec.message();
    co_return;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kResponseLimit);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kTuple);
  // A body over the limit still told us the status.
  if (rec && !(rec == http::error::body_limit && parser.is_header_done())) {
    out.error = "reading the response: " + rec.message();
    co_return;
  }
  out.status = static_cast<int>(parser.get().result_int());
}

asio::awaitable<void> post(asio::io_context& io, ssl::context& tls, const core::HttpUrl& url,
                           const http::request<http::string_body>& req,
                           SteadyClock::time_point deadline, PostResult& out) {
  tcp::resolver resolver(io);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(url.host, std::to_string(url.port), kTuple);
  if (rec) {
    out.error = "cannot resolve " + url.host + ": " + rec.message();
    co_return;
  }
  if (!url.tls) {
    beast::tcp_stream stream(io);
    stream.expires_at(deadline);
    auto [cec, ep] = co_await stream.async_connect(endpoints, kTuple);
    if (cec) {
      out.error = "cannot connect: " + cec.message();
      co_return;
    }
    co_await exchange(stream, req, out);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> stream(io, tls);
  if (!SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str())) {
    out.error = "cannot set the TLS server name";
    co_return;
  }
  stream.set_verify_callback(ssl::host_name_verification(url.host));
  beast::get_lowest_layer(stream).expires_at(deadline);
  auto [cec, ep] = co_await beast::get_lowest_layer(stream).async_connect(endpoints, kTuple);
  if (cec) {
    out.error = "cannot connect: " + cec.message();
    co_return;
  }
  auto [hec] = co_await stream.async_handshake(ssl::stream_base::client, kTuple);
  if (hec) {
    out.error = "TLS handshake: " + hec.message();
    co_return;
  }
  co_await exchange(stream, req, out);
}

}  // namespace

std::string render(Format format, const Event& e) {
  if (format == Format::Slack) return nlohmann::json{{"text", slack_text(e)}}.dump();
  nlohmann::json j{{"event", e.event},
                   {"status", e.status},
                   {"commit", e.commit},
                   {"reason", e.reason},
                   {"time", core::format_rfc3339(e.time)}};
  if (!e.service.empty()) j["service"] = e.service;
  if (!e.execution_id.empty()) j["execution_id"] = e.execution_id;
  if (!e.deployment_id.empty()) j["deployment_id"] = e.deployment_id;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string signature(std::string_view key, std::string_view body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 0xf]);
  }
  return out;
}

struct Notifier::Impl {
  struct Receiver {
    Target target;
    core::HttpUrl url;
  };
  struct Delivery {
    std::shared_ptr<const Receiver> to;
    std::string event;
    std::string body;
    int attempts = 0;
    SteadyClock::time_point due;
  };

  Options options;
  ssl::context tls{ssl::context::tls_client};
  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;                                   // guarded by mu
  std::vector<std::shared_ptr<const Receiver>> receivers;  // guarded by mu
  std::deque<Delivery> queue;                              // guarded by mu, oldest first
  bool sending = false;                                    // guarded by mu
  Stats stats;                                             // guarded by mu
  std::thread worker;

  explicit Impl(Options o) : options(o) {
    boost::system::error_code ec;
    tls.set_default_verify_paths(ec);
    if (ec) core::logger()->warn("notify: no default CA certificates: {}", ec.message());
    tls.set_verify_mode(ssl::verify_peer);
  }

  // Caller holds mu.
  void enqueue(Delivery d) {
    if (queue.size() >= options.queue_limit) {
      const Delivery& old = queue.front();
      ++stats.dropped;
      core::logger()->warn(
          "notify: queue full ({} deliveries): dropping the oldest, {} to {} ({} dropped so far)",
          options.queue_limit, old.event, old.to->url.host, stats.dropped);
      queue.pop_front();
    }
    queue.push_back(std::move(d));
    cv.notify_all();
  }

  PostResult send(const Delivery& d) {
    http::request<http::string_body> req{http::verb::post, d.to->url.target, 11};
    const bool default_port = d.to->url.port == (d.to->url.tls ? 443 : 80);
    const std::string host =
        d.to->url.host.find(':') != std::string::npos ? "[" + d.to->url.host + "]" : d.to->url.host;
    req.set(http::field::host, default_port ? host : host + ":" + std::to_string(d.to->url.port));
    req.set(http::field::user_agent, "cutover-notify");
    req.set(http::field::content_type, "application/json");
    req.set("X-Cutover-Event", d.event);
    if (!d.to->target.hmac_key.empty()) {
      req.set("X-Cutover-Signature", signature(d.to->target.hmac_key, d.body));
    }
    req.keep_alive(false);
    req.body() = d.body;
    req.prepare_payload();
    PostResult out;
    asio::io_context io{1};
    const auto deadline = SteadyClock::now() + options.timeout;
    bool finished = false;
    asio::co_spawn(io, post(io, tls, d.to->url, req, deadline, out),
                   [&](const std::exception_ptr&) { finished = true; });
    // The stream deadlines bound connect/handshake/write/read; this also bounds name resolution.
    io.run_until(deadline + std::chrono::milliseconds(50));
    if (!finished) {
      out = PostResult{0, "timed out after " + std::to_string(options.timeout.count()) + " ms"};
    } else if (out.status == 0 && out.error.find("timeout") != std::string::npos) {
      out.error = "timed out after " + std::to_string(options.timeout.count()) + " ms";
    }
    return out;
  }

  void run() {
    auto log = core::logger();
    std::unique_lock lock(mu);
    while (!stopping) {
      if (queue.empty()) {
        cv.wait(lock);
        continue;
      }
      auto next = std::min_element(queue.begin(), queue.end(),
                                   [](const auto& a, const auto& b) { return a.due < b.due; });
      if (next->due > SteadyClock::now()) {
        cv.wait_until(lock, next->due);
        continue;
      }
      Delivery d = std::move(*next);
      queue.erase(next);
      sending = true;
      lock.unlock();
      const PostResult r = send(d);
      lock.lock();
      sending = false;
      ++d.attempts;
      const std::string outcome = r.status != 0 ? "HTTP " + std::to_string(r.status) : r.error;
      if (r.status >= 200 && r.status < 300) {
        ++stats.delivered;
      } else if (retryable(r) && d.attempts < options.max_attempts && !stopping) {
        ++stats.retries;
        const auto backoff = options.initial_backoff * (1 << std::min(d.attempts - 1, 16));
        log->warn("notify: {} to {}: {} (attempt {} of {}, next in {} ms)", d.event, d.to->url.host,
                  outcome, d.attempts, options.max_attempts, backoff.count());
        d.due = SteadyClock::now() + backoff;
        enqueue(std::move(d));
      } else {
        ++stats.failed;
        log->warn("notify: {} to {} not delivered: {} (attempt {} of {}{})", d.event,
                  d.to->url.host, outcome, d.attempts, options.max_attempts,
                  retryable(r) ? "" : ", not retried");
      }
      cv.notify_all();
    }
  }
};

Notifier::Notifier(Options options) : impl_(std::make_unique<Impl>(options)) {
  impl_->worker = std::thread([this] { impl_->run(); });
}

Notifier::~Notifier() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
    if (!impl_->queue.empty()) {
      core::logger()->warn("notify: stopping with {} undelivered notification(s)",
                           impl_->queue.size());
    }
  }
  impl_->cv.notify_all();
  impl_->worker.join();
}

core::Result<void> Notifier::configure(std::vector<Target> targets) {
  std::vector<std::shared_ptr<const Impl::Receiver>> receivers;
  std::string errors;
  for (size_t i = 0; i < targets.size(); ++i) {
    auto url = core::parse_http_url(targets[i].url);
    if (!url) {
      errors += (errors.empty() ? "" : "; ") + std::string("notifications[") + std::to_string(i) +
                "].url " + url.error().message;
      continue;
    }
    receivers.push_back(
        std::make_shared<const Impl::Receiver>(Impl::Receiver{std::move(targets[i]), *url}));
  }
  {
    std::lock_guard lock(impl_->mu);
    impl_->receivers = std::move(receivers);
  }
  if (!errors.empty()) return core::Error(errors);
  return {};
}

void Notifier::notify(const Event& event) {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopping) return;
  std::string rendered[2];  // by format, rendered once
  for (const auto& r : impl_->receivers) {
    const auto& ev = r->target.events;
    if (!ev.empty() && std::find(ev.begin(), ev.end(), event.event) == ev.end()) continue;
    std::string& body = rendered[r->target.format == Format::Slack ? 1 : 0];
    if (body.empty()) body = render(r->target.format, event);
    ++impl_->stats.queued;
    impl_->enqueue(Impl::Delivery{r, event.event, body, 0, SteadyClock::now()});
  }
}

Stats Notifier::stats() const {
  std::lock_guard lock(impl_->mu);
  Stats s = impl_->stats;
  s.pending = impl_->queue.size() + (impl_->sending ? 1 : 0);
  return s;
}

}  // namespace cutover::notify
