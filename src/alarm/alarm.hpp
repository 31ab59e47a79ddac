// alarm: metric windows and alarm evaluation over the proxy's per-second datapoints. Pure: no I/O,
// no clock (DESIGN.md §3). The evaluation itself arrives with the deployment-engine issue; this
// header fixes the verdict vocabulary the controller and the API already use.
#pragma once

#include <string_view>

namespace cutover::alarm {

enum class Verdict { Ok, Alarm, InsufficientData };

std::string_view to_string(Verdict v);

}  // namespace cutover::alarm
