#include "api/server.hpp"

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <openssl/crypto.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "api/routes.hpp"
#include "core/fs.hpp"
#include "core/id.hpp"
#include "core/log.hpp"

namespace cutover::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

Response error_response(int status, const std::string& message) {
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') {
      escaped.push_back('\\');
      escaped.push_back(c);
    } else if (c == '\n') {
      escaped += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      escaped += ' ';
    } else {
      escaped.push_back(c);
    }
  }
  return Response{status, "{\"error\":\"" + escaped + "\"}\n"};
}

namespace {

constexpr size_t kBodyLimit = 1 << 20;
constexpr size_t kHeaderLimit = 16 << 10;
constexpr auto kReadTimeout = std::chrono::seconds{30};

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

Request to_request(const http::request<http::string_body>& req) {
  Request out;
  out.method = std::string(req.method_string());
  std::string_view target = req.target();
  const auto q = target.find('?');
  out.path = url_decode(target.substr(0, q));
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      auto amp = rest.find('&');
      std::string_view kv = rest.substr(0, amp);
      auto eq = kv.find('=');
      out.query[url_decode(kv.substr(0, eq))] =
          eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      rest = rest.substr(amp + 1);
    }
  }
  out.body = req.body();
  for (const auto& f : req) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(f.value());
  }
  return out;
}

bool token_matches(std::string_view header, const std::string& token) {
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() != kBearer.size() + token.size() ||
      header.substr(0, kBearer.size()) != kBearer) {
    return false;
  }
  return CRYPTO_memcmp(header.data() + kBearer.size(), token.data(), token.size()) == 0;
}

}  // namespace

struct ApiServer::Impl {
  controller::Controller& controller;
  ApiOptions options;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::string bound;

  Impl(controller::Controller& c, ApiOptions o) : controller(c), options(std::move(o)) {}

  Response handle(const http::request<http::string_body>& req, const std::string& remote) {
    // Webhooks come from git hosts that have no bearer token: they authenticate with the
    // provider's signature of the body instead (controller/webhooks.cpp).
    if (req.target().starts_with("/v1/webhooks/")) {
      Request r = to_request(req);
      r.remote = remote;
      return route_webhook(controller, r);
    }
    if (!token_matches(req[http::field::authorization], options.token)) {
      return error_response(401,
                            "missing or wrong bearer token (the CLI reads it from the state "
                            "directory's api-token file)");
    }
    return route(controller, to_request(req));
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    const std::string remote =
        peer_ec ? "?" : peer.address().to_string() + ":" + std::to_string(peer.port());
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    while (true) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(kBodyLimit);
      parser.header_limit(kHeaderLimit);
      stream.expires_after(kReadTimeout);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (ec == http::error::end_of_stream || ec == beast::error::timeout) break;
      Response r;
      bool keep_alive = false;
      if (ec == http::error::body_limit) {
        r = error_response(413, "request body larger than 1 MiB");
      } else if (ec == http::error::header_limit) {
        r = error_response(431, "request headers larger than 16 KiB");
      } else if (ec) {
        r = error_response(400, "malformed HTTP request: " + ec.message());
      } else {
        r = handle(parser.get(), remote);
        keep_alive = parser.get().keep_alive();
      }
      http::response<http::string_body> res{static_cast<http::status>(r.status), 11};
      res.set(http::field::content_type, r.content_type);
      res.set(http::field::cache_control, "no-store");
      res.body() = std::move(r.body);
      res.keep_alive(keep_alive);
      res.prepare_payload();
      stream.expires_after(kReadTimeout);
      auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
      if (wec || !keep_alive) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  asio::awaitable<void> accept_loop() {
    while (acceptor.is_open()) {
      auto [ec, socket] = co_await acceptor.async_accept(kTuple);
      if (ec) {
        if (ec == asio::error::operation_aborted) break;
        continue;
      }
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }
};

ApiServer::ApiServer(controller::Controller& controller, ApiOptions options)
    : impl_(std::make_unique<Impl>(controller, std::move(options))) {}

ApiServer::~ApiServer() { stop(); }

core::Result<void> ApiServer::start() {
  const std::string& addr = impl_->options.address;
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) {
    return core::Error("invalid --api address \"" + addr + "\": expected host:port");
  }
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(addr.substr(0, colon), ec);
  if (ec) return core::Error("invalid --api address \"" + addr + "\": " + ec.message());
  int port = 0;
  try {
    port = std::stoi(addr.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535) return core::Error("invalid --api port in \"" + addr + "\"");
  tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  auto& acc = impl_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return core::Error("cannot listen on " + addr + " for the API: " + ec.message());
  auto local = acc.local_endpoint(ec);
  impl_->bound = local.address().to_string() + ":" + std::to_string(local.port());
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
  core::logger()->info("api: listening on http://{}", impl_->bound);
  return {};
}

void ApiServer::stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
    impl_->io.stop();
  });
  impl_->thread.join();
}

std::string ApiServer::bound_address() const { return impl_->bound; }

core::Result<std::string> load_or_create_token(const std::string& state_dir) {
  const std::filesystem::path file = std::filesystem::path(state_dir) / "api-token";
  if (std::filesystem::exists(file)) {
    auto text = core::read_file(file);
    if (!text) return text.error();
    std::string token = *text;
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
    if (token.size() < 32)
      return core::Error(file.string() + " holds no valid token; remove it to generate a new one");
    return token;
  }
  std::string token = core::random_hex(32);
  if (auto w = core::write_file_atomic(file, token + "\n", 0600); !w) return w.error();
  return token;
}

}  // namespace cutover::api
