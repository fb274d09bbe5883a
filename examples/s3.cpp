// Checkpoints on S3: the same calls with s3:// URLs. The store comes from the AWS_* variables and
// ~/.aws files, as for the AWS CLI and boto3 (CI: scripts/s3-server.sh's throwaway gateway).
//   s3 s3://BUCKET/PREFIX
#include <ckpt/checkpoint_reader.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/module_state.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include <torch/torch.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("s3: " + what);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: s3 s3://BUCKET/PREFIX\n");
    return 2;
  }
  const std::string prefix = argv[1];
  try {
    torch::manual_seed(0);
    torch::nn::Linear model(16, 4);
    // [readme]
    ckpt::DefaultCheckpointerArguments args;
    args.save_dir = prefix + "/run";           // an s3:// URL wherever a directory goes
    args.load_dir = prefix + "/run";
    ckpt::DefaultCheckpointer checkpointer(args);  // S3Storage, from the URL
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      ckpt::Checkpoint checkpoint;
      checkpoint.module_interface_state = ckpt::module_state(*model);
      checkpointer.save(checkpoint, epoch);    // s3://.../run/model_<epoch>.pt: one PUT, or a
    }                                          // multipart upload visible only when complete
    ckpt::Checkpoint resumed = checkpointer.load();   // the newest that verifies
    ckpt::verify_file(prefix + "/run/model_1.pt");    // the file functions take URLs too
    // [/readme]
    require(ckpt::deep_equal(resumed.module_interface_state, ckpt::module_state(*model)),
            "the resumed weights differ");
    require(checkpointer.loaded_path().value_or("").string() == prefix + "/run/model_1.pt",
            "did not resume from the newest");
    std::printf("s3: saved and resumed through %s\n", prefix.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
