// Fault injection and the cost model of the fake engine. Every request draws, in a fixed
// order from one seeded generator, whether it is reset unanswered, answered 500, reset after
// its work, or slowed; then it spends its endpoint's latency (scaled, jittered), holding one
// of the engine's CPUs if it is heavy work (runc, the shim), before its endpoint runs.
// Stream cuts and lost events are drawn where they happen (logs, exec start, emit).
#include <algorithm>

#include "app/fake_engine/engine.hpp"

namespace corral::app {

using namespace fake;
using std::chrono::microseconds;

void fake_engine::impl::on_request(const std::shared_ptr<session>& s) {
  route r = make_route(s->req());
  ++st.requests[r.cls];
  ++st.requests_total;
  // Draws in a fixed order, so a seed replays the same faults for the same requests.
  const bool reset_now = roll(rate(opt.reset_rates, opt.reset_rate, r.cls));
  const bool fail = roll(rate(opt.error_rates, opt.error_rate, r.cls));
  const bool reset_after = roll(rate(opt.reset_after_rates, opt.reset_after_rate, r.cls));
  const bool slow = r.cls != "unknown" && roll(opt.slow_rate);
  if (reset_now) {
    ++st.injected_resets[r.cls];
    return s->reset();
  }
  const auto work = latency_of(r.cls);
  microseconds extra{0};
  if (slow) {
    ++st.injected_slow;
    extra = opt.slow_delay;
  }
  // Only the container lifecycle and exec start hold a CPU (runc, shim); lookups do not.
  const bool heavy = r.cls == "create" || r.cls == "start" || r.cls == "stop" || r.cls == "kill" ||
                     r.cls == "remove" || r.cls == "exec_start";
  auto go = [this, s, r = std::move(r), fail, reset_after] {
    if (stopping) return;
    if (fail) {
      ++st.injected_errors[r.cls];
      s->reply_error(http::status::internal_server_error, "fake engine: injected failure");
      return;
    }
    if (reset_after) {
      ++st.injected_resets_after[r.cls];
      s->reset_instead_of_reply = true;
    }
    handle(s, r);
  };
  // The engine's work first (holding a CPU), then the injected slowness (holding none).
  on_cpu(s, work, heavy, [s, extra, go = std::move(go)]() mutable {
    if (extra.count() == 0) return go();
    s->timer().expires_after(extra);
    s->timer().async_wait([go = std::move(go)](beast::error_code ec) {
      if (!ec) go();
    });
  });
}

void fake_engine::impl::on_cpu(const std::shared_ptr<session>& s, microseconds work, bool heavy,
                               std::function<void()> then) {
  if (work.count() == 0) return then();
  if (!heavy) {
    s->timer().expires_after(work);
    s->timer().async_wait([then = std::move(then)](beast::error_code ec) {
      if (!ec) then();
    });
    return;
  }
  auto run = [this, s, work, then = std::move(then)]() mutable {
    ++cpus_busy;
    s->timer().expires_after(work);
    s->timer().async_wait([this, then = std::move(then)](beast::error_code ec) {
      --cpus_busy;
      next_cpu();
      if (!ec) then();
    });
  };
  if (opt.engine_cpus <= 0 || cpus_busy < opt.engine_cpus) return run();
  cpu_queue.push_back(std::move(run));
  st.cpu_queued_max = std::max<uint64_t>(st.cpu_queued_max, cpu_queue.size());
}

void fake_engine::impl::next_cpu() {
  while (!stopping && !cpu_queue.empty() && (opt.engine_cpus <= 0 || cpus_busy < opt.engine_cpus)) {
    auto f = std::move(cpu_queue.front());
    cpu_queue.pop_front();
    f();
  }
}

bool fake_engine::impl::roll(double p) {
  if (p <= 0) return false;
  if (p >= 1) return true;
  return std::uniform_real_distribution<double>(0, 1)(fault_rng) < p;
}

double fake_engine::impl::rate(const std::map<std::string, double>& by_class, double global,
                               const std::string& cls) const {
  if (cls == "unknown") return 0;
  auto it = by_class.find(cls);
  return it != by_class.end() ? it->second : global;
}

microseconds fake_engine::impl::latency_of(const std::string& cls) {
  const auto& l = opt.latency;
  microseconds base{0};
  if (cls == "ping" || cls == "version" || cls == "info")
    base = l.ping;
  else if (cls == "create")
    base = l.create;
  else if (cls == "start")
    base = l.start;
  else if (cls == "stop")
    base = l.stop;
  else if (cls == "kill")
    base = l.kill;
  else if (cls == "remove")
    base = l.remove;
  else if (cls == "inspect" || cls == "image")
    base = l.inspect;
  else if (cls == "list")
    base = l.list;
  else if (cls == "exec_create")
    base = l.exec_create;
  else if (cls == "exec_start")
    base = l.exec_start;
  else if (cls == "exec_inspect")
    base = l.exec_inspect;
  else if (cls == "events" || cls == "unknown")
    base = microseconds{0};
  else
    base = l.other;
  if (opt.latency_scale <= 0 || base.count() == 0) return microseconds{0};
  double us = static_cast<double>(base.count()) * opt.latency_scale;
  if (opt.jitter > 0)
    us *= std::uniform_real_distribution<double>(1 - opt.jitter, 1 + opt.jitter)(jitter_rng);
  return microseconds{static_cast<int64_t>(us)};
}

}  // namespace corral::app
