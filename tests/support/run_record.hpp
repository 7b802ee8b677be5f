// The run records of the overlap tests: their exec programs append "S <pid> <ns>" to a file when
// a run starts and "E <pid> <ns>" when it ends. Read back as one span per run, in start order.
#pragma once
#include <algorithm>
#include <climits>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace agentcron::testing {

struct RunSpan {
  long long start = 0;
  long long end = LLONG_MAX;  // no end recorded: it never ended, as far as anyone knows
};

inline std::vector<RunSpan> read_runs(const std::string& path) {
  std::ifstream in(path);
  std::map<std::string, RunSpan> by_pid;
  std::string mark, pid;
  long long ns;
  while (in >> mark >> pid >> ns) (mark == "S" ? by_pid[pid].start : by_pid[pid].end) = ns;
  std::vector<RunSpan> spans;
  for (const auto& [p, span] : by_pid) spans.push_back(span);
  std::sort(spans.begin(), spans.end(), [](const RunSpan& a, const RunSpan& b) { return a.start < b.start; });
  return spans;
}

// How many runs started before the run before them had ended.
inline int overlapping(const std::vector<RunSpan>& spans) {
  int n = 0;
  for (std::size_t i = 1; i < spans.size(); ++i)
    if (spans[i].start < spans[i - 1].end) ++n;
  return n;
}

}  // namespace agentcron::testing
