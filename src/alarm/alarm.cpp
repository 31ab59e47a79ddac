#include "alarm/alarm.hpp"

namespace cutover::alarm {

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Ok:
      return "OK";
    case Verdict::Alarm:
      return "ALARM";
    case Verdict::InsufficientData:
      return "INSUFFICIENT_DATA";
  }
  return "?";
}

}  // namespace cutover::alarm
