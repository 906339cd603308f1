// A log-bucketed latency histogram: constant memory, ~1% relative error, any number of
// samples. Values are microseconds.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

namespace corral::app {

class latency_histogram {
 public:
  // Buckets grow by 2% from 1 µs: 1,400 buckets reach past 10^12 µs (11 days).
  static constexpr double growth = 1.02;
  static constexpr std::size_t bucket_count = 1400;

  void record(uint64_t micros) {
    ++count_;
    sum_ += micros;
    max_ = std::max(max_, micros);
    min_ = count_ == 1 ? micros : std::min(min_, micros);
    ++buckets_[index(micros)];
  }

  void merge(const latency_histogram& other) {
    if (other.count_ == 0) return;
    min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
    for (std::size_t i = 0; i < bucket_count; ++i) buckets_[i] += other.buckets_[i];
  }

  // The value at quantile q in [0, 1]: the upper bound of the bucket holding it, clamped to
  // the observed maximum.
  uint64_t quantile(double q) const {
    if (count_ == 0) return 0;
    const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
    uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      seen += buckets_[i];
      if (seen >= std::max<uint64_t>(rank, 1)) return std::min(upper_bound(i), max_);
    }
    return max_;
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return min_; }
  double mean() const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }

  // For plotting: bucket i covers (upper_bound(i-1), upper_bound(i)].
  uint64_t bucket(std::size_t i) const { return buckets_[i]; }
  static uint64_t upper_bound(std::size_t i) {
    return static_cast<uint64_t>(std::ceil(std::pow(growth, static_cast<double>(i))));
  }

 private:
  static std::size_t index(uint64_t micros) {
    if (micros <= 1) return 0;
    const auto i = static_cast<std::size_t>(
        std::ceil(std::log(static_cast<double>(micros)) / std::log(growth)));
    return std::min(i, bucket_count - 1);
  }

  std::array<uint64_t, bucket_count> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = 0;
};

}  // namespace corral::app
