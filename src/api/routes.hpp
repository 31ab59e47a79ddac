// The REST API's routes: /v1/... JSON resources over the controller's read side and operator
// commands. Authentication happens in the server before a request reaches here.
//
// Thread-safety: route() may be called from any thread; it only calls the controller's
// thread-safe methods.
#pragma once

#include "api/http_types.hpp"

namespace cutover::controller {
class Controller;
}

namespace cutover::api {

Response route(controller::Controller& controller, const Request& request);
// POST /v1/webhooks/PROVIDER only: the one entry point that skips the bearer token (the provider's
// signature authenticates it), so it cannot reach any other resource.
Response route_webhook(controller::Controller& controller, const Request& request);

}  // namespace cutover::api
