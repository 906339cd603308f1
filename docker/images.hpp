// Images area of the Engine API: inspect, list, remove, pull (streamed progress).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace corral::docker {

struct image_inspect_response {
  std::string id;
  std::vector<std::string> repo_tags;
  std::string created;
  int64_t size = 0;
  std::string user;
  std::vector<std::string> env;
  std::map<std::string, std::string> labels;
};

struct image_summary {
  std::string id;
  std::vector<std::string> repo_tags;
  int64_t created = 0;
  int64_t size = 0;
  std::map<std::string, std::string> labels;
};

struct image_list_options {
  bool all = false;
  std::map<std::string, std::vector<std::string>> filters;  // {"reference": {"corral/*"}}
};

struct image_delete_item {
  std::string untagged;
  std::string deleted;
};

}  // namespace corral::docker
