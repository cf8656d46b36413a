// Checkpoint write protocol and loader (see checkpoint.h).
#include "runtime/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/serialize.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "runtime/error.h"
#include "runtime/gradient_sync.h"

namespace ra {
namespace fs = std::filesystem;
namespace {

// Format 3: weights by flat name (fp32 master copies for bf16 models) and the AdamW state of
// one flat tensor per parameter group (FlatParameters). Format 2 had one AdamW state per
// parameter, format 1 stored the module tree; neither is readable any more.
constexpr const char* kFormat = "ringattn-checkpoint-3";

std::string step_name(int64_t step) {
  std::ostringstream os;
  os << "step_" << std::setw(9) << std::setfill('0') << step;
  return os.str();
}

std::string rank_file(int rank) {
  std::ostringstream os;
  os << "rank_" << std::setw(5) << std::setfill('0') << rank << ".pt";
  return os.str();
}

// Every rank throws when any rank failed a file operation (the flag lives on the model's
// device: NCCL reduces only CUDA tensors).
void agree(Communicator& comm, const c10::Device& device, bool ok, const std::string& what) {
  const double failed = sum_over_ranks({ok ? 0.0 : 1.0}, comm, device)[0];
  RA_CHECK(failed == 0.0, "checkpoint: ", what, " failed on ", int(failed), " rank(s)");
}

c10::Device device_of(const NamedWeights& weights) {
  return weights.is_empty() ? c10::Device(c10::kCPU) : weights.front().value().device();
}

// Why `dir` is not a complete checkpoint for world_size ranks ("" if it is); the format is
// checked only with check_format.
std::string checkpoint_problem(const std::string& dir, int world_size, bool check_format) {
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path)) return "no manifest.json (an interrupted save)";
  nlohmann::json manifest;
  try {
    std::ifstream in(manifest_path);
    in >> manifest;
  } catch (const std::exception& e) {
    return std::string("unreadable manifest.json: ") + e.what();
  }
  const std::string format = manifest.value("format", nlohmann::json("(none)")).dump();
  if (check_format && format != nlohmann::json(kFormat).dump()) {
    return "format " + format + ", this build reads " + kFormat;
  }
  if (!manifest.contains("world_size") || manifest["world_size"].get<int>() != world_size) {
    return "written by a job of another world size (manifest: " +
           manifest.value("world_size", nlohmann::json(-1)).dump() +
           ", this job: " + std::to_string(world_size) + ")";
  }
  if (!manifest.contains("rank_files") || manifest["rank_files"].size() != size_t(world_size)) {
    return "manifest.json lists the wrong number of rank files";
  }
  for (const auto& file : manifest["rank_files"]) {
    if (!fs::exists(fs::path(dir) / file.get<std::string>())) {
      return "missing rank file " + file.get<std::string>();
    }
  }
  return "";
}

// The format a checkpoint's manifest names, quoted ("(none)" without one); "" when unreadable.
std::string manifest_format(const std::string& dir) {
  try {
    std::ifstream in(fs::path(dir) / "manifest.json");
    if (!in) return "";
    nlohmann::json manifest;
    in >> manifest;
    return manifest.value("format", nlohmann::json("(none)")).dump();
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace

std::string checkpoint_directory(const std::string& save_dir, int64_t step) {
  return (fs::path(save_dir) / step_name(step)).string();
}

int64_t checkpoint_step(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  RA_CHECK(name.rfind("step_", 0) == 0, "'", dir, "' is not a step_<N> checkpoint directory");
  return std::stoll(name.substr(5));
}

std::string save_checkpoint(const std::string& save_dir, int64_t step, Communicator& comm,
                            const NamedWeights& weights, torch::optim::Optimizer& optimizer,
                            const std::string& config_text) {
  const fs::path final_dir = fs::path(save_dir) / step_name(step);
  const fs::path tmp_dir = fs::path(save_dir) / (step_name(step) + ".tmp");
  const c10::Device device = device_of(weights);
  std::string error;
  if (comm.rank() == 0) {
    try {
      fs::create_directories(save_dir);
      fs::remove_all(tmp_dir);
      fs::create_directories(tmp_dir);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  agree(comm, device, error.empty(),
        "creating " + tmp_dir.string() + (error.empty() ? "" : ": " + error));

  bool ok = true;
  try {
    torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
    for (const auto& w : weights) {
      // A view (of a flat buffer) would be saved with its whole storage: save its own data.
      at::Tensor data = w.value().detach();
      if (data.storage().nbytes() != data.nbytes()) data = data.clone();
      model_archive.write(w.key(), data);
    }
    optimizer.save(optimizer_archive);
    archive.write("model", model_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("step", at::full({1}, step, at::kLong));
    archive.save_to((tmp_dir / rank_file(comm.rank())).string());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: writing checkpoint file failed: %s\n", comm.rank(), e.what());
    ok = false;
  }
  agree(comm, device, ok, "writing the rank files in " + tmp_dir.string());

  if (comm.rank() == 0) {
    try {
      nlohmann::json manifest;
      manifest["format"] = kFormat;
      manifest["step"] = step;
      manifest["world_size"] = comm.size();
      std::vector<std::string> files;
      for (int r = 0; r < comm.size(); ++r) files.push_back(rank_file(r));
      manifest["rank_files"] = files;
      manifest["config"] = config_text;
      {
        std::ofstream out(tmp_dir / "manifest.json");
        out << manifest.dump(2) << "\n";
        out.flush();
        RA_CHECK(out.good(), "writing manifest.json failed");
      }
      fs::remove_all(final_dir);
      fs::rename(tmp_dir, final_dir);  // atomic on one file system
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  agree(comm, device, error.empty(),
        "publishing " + final_dir.string() + (error.empty() ? "" : ": " + error));
  return final_dir.string();
}

bool is_complete_checkpoint(const std::string& dir, int world_size, std::string* reason) {
  const std::string problem = checkpoint_problem(dir, world_size, /*check_format=*/true);
  if (reason && !problem.empty()) *reason = problem;
  return problem.empty();
}

std::optional<std::string> find_latest_checkpoint(const std::string& save_dir, int world_size) {
  if (save_dir.empty() || !fs::is_directory(save_dir)) return std::nullopt;
  static const std::regex pattern("step_([0-9]+)");  // *.tmp directories never match
  std::optional<std::string> best;
  int64_t best_step = -1;
  for (const auto& entry : fs::directory_iterator(save_dir)) {
    std::smatch match;
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !std::regex_match(name, match, pattern)) continue;
    const int64_t step = std::stoll(match[1].str());
    // Any format: resuming then refuses one this build cannot read (naming its format),
    // rather than starting over and overwriting it.
    if (step > best_step &&
        checkpoint_problem(entry.path().string(), world_size, /*check_format=*/false).empty()) {
      best_step = step;
      best = entry.path().string();
    }
  }
  return best;
}

int64_t load_checkpoint(const std::string& dir, int rank, int world_size,
                        const NamedWeights& weights, torch::optim::Optimizer& optimizer) {
  const std::string format = manifest_format(dir);
  RA_CHECK(
      format.empty() || format == nlohmann::json(kFormat).dump(), "--resume = '", dir,
      "': checkpoint format ", format, ", this build reads \"", kFormat,
      "\" (format 3 keeps the optimizer state as one flat tensor per parameter group); "
      "resume with the build that wrote it, or start afresh (no --resume) in another --save-dir");
  std::string reason;
  RA_CHECK(is_complete_checkpoint(dir, world_size, &reason), "--resume = '", dir,
           "': not a complete checkpoint: ", reason);
  torch::serialize::InputArchive archive, model_archive, optimizer_archive;
  archive.load_from((fs::path(dir) / rank_file(rank)).string());
  archive.read("model", model_archive);
  archive.read("optimizer", optimizer_archive);
  at::Tensor step;
  archive.read("step", step);
  {
    torch::NoGradGuard no_grad;
    for (const auto& w : weights) {
      at::Tensor stored;
      RA_CHECK(model_archive.try_read(w.key(), stored), "checkpoint ", dir,
               " has no weight named '", w.key(), "' (written by a different model?)");
      RA_CHECK(stored.sizes() == w.value().sizes(), "checkpoint ", dir, ": weight '", w.key(),
               "' has shape ", stored.sizes(), ", the model's is ", w.value().sizes());
      w.value().copy_(stored);
    }
  }
  optimizer.load(optimizer_archive);
  return step.item<int64_t>();
}

}  // namespace ra
