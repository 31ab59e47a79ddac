// Which runtime driver runs a service's tasks (`driver: process | podman`) and which one started
// a task the store recorded, so that stop and re-adoption go to the right one even after the
// service's configuration changed its driver.
#include "controller/internal.hpp"

namespace cutover::controller {

namespace {

std::string driver_key(const std::string& task_id) { return "task.driver/" + task_id; }

}  // namespace

runtime::Driver& Controller::Impl::driver_for(const config::Service& service) {
  if (service.driver == config::Driver::Podman) return *podman;
  return *driver;
}

runtime::Driver& Controller::Impl::driver_of(const std::string& task_id) {
  auto recorded = store->get_meta(driver_key(task_id));
  if (recorded && recorded->has_value() && **recorded == "podman") return *podman;
  return *driver;
}

core::Result<void> Controller::Impl::record_driver(const std::string& task_id,
                                                   const config::Service& service) {
  if (service.driver != config::Driver::Podman) return {};  // absent = process
  return store->set_meta(driver_key(task_id), "podman");
}

}  // namespace cutover::controller
