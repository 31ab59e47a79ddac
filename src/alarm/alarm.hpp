// alarm: metric windows and alarm evaluation over the proxy's per-second datapoints. Pure: no I/O,
// no clock (DESIGN.md §3). The evaluation itself arrives with the deployment-engine issue; this
// header fixes the verdict vocabulary the controller and the API already use, and the datapoint
// type it evaluates.
#pragma once

#include <string_view>

#include "core/stats.hpp"

namespace cutover::alarm {

enum class Verdict { Ok, Alarm, InsufficientData };

std::string_view to_string(Verdict v);

// One second of one target group (or target), exactly as the proxy reports it: the controller
// gets them from proxy::AdminClient::stats_series() and passes them on unchanged. A period's
// datapoint is the sum of its seconds (Datapoint::add); its percentiles come from the summed
// histogram (LatencyHistogram::quantile), not from averaging per-second percentiles.
using Datapoint = core::Datapoint;

}  // namespace cutover::alarm
