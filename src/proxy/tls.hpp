// TLS termination for the proxy's listeners: OpenSSL server contexts through Asio. A context is
// built when a snapshot is applied (control thread) and shared read-only by every worker's
// connections on that listener; OpenSSL's SSL_CTX is safe to share across threads once set up.
// Kept out of internal.hpp so that only the files that need OpenSSL include it.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

#include "core/result.hpp"

namespace cutover::proxy::detail {

// TLS 1.2 and 1.3 only, no renegotiation, ALPN "http/1.1" (a client offering h2 gets HTTP/1.1,
// never a protocol the proxy does not speak). Errors name the file and OpenSSL's reason.
core::Result<std::shared_ptr<boost::asio::ssl::context>> make_server_context(
    const std::string& cert_file, const std::string& key_file);

}  // namespace cutover::proxy::detail
