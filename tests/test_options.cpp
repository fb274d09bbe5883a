#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>

#include <boost/program_options.hpp>

#include "test_util.h"

#include <fstream>
#include <sstream>

namespace po = boost::program_options;
using ckpt::DefaultCheckpointerArguments;
using ckpt::test::TempDir;

namespace {

// Parses like a program would: command line first (it wins), then the config file, then notify.
// `args` holds the program's presets.
DefaultCheckpointerArguments parse(std::vector<std::string> argv_strings,
                                   const std::string& config_path = "",
                                   DefaultCheckpointerArguments args = {}) {
  po::options_description desc;
  desc.add(ckpt::default_checkpointer_options(args));
  std::vector<const char*> argv{"program"};
  for (const auto& s : argv_strings) argv.push_back(s.c_str());
  po::variables_map vm;
  po::store(po::parse_command_line(static_cast<int>(argv.size()), argv.data(), desc), vm);
  if (!config_path.empty()) po::store(po::parse_config_file<char>(config_path.c_str(), desc), vm);
  po::notify(vm);
  return args;
}

bool names(const std::exception& e, const std::string& flag, const std::string& value) {
  const std::string what = e.what();
  return what.find(flag) != std::string::npos && what.find(value) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(options)

BOOST_AUTO_TEST_CASE(defaults_without_flags) {
  const auto args = parse({});
  const DefaultCheckpointerArguments defaults;
  BOOST_TEST(args.checkpoint == defaults.checkpoint);
  BOOST_TEST(args.period == 1);
  BOOST_TEST(args.save_dir == defaults.save_dir);
  BOOST_TEST(!args.load_dir.has_value());
  BOOST_TEST(!args.load_filename.has_value());
  BOOST_TEST(args.file_prefix == "model");
  BOOST_TEST(!args.async);
}

BOOST_AUTO_TEST_CASE(every_flag_binds_its_field) {
  const auto args = parse({"--chkp.checkpoint", "false", "--chkp.delete_existing_checkpoints",
                           "yes", "--chkp.period", "3", "--chkp.save_dir", "/tmp/s",
                           "--chkp.model_state_save_dir", "/tmp/m", "--chkp.load_dir", "/tmp/l",
                           "--chkp.load_filename", "f.pt", "--chkp.file_prefix", "run",
                           "--chkp.file_ext", "tar", "--chkp.log_level", "debug",
                           "--chkp.async", "on"});
  BOOST_TEST(!args.checkpoint);
  BOOST_TEST(args.delete_existing_checkpoints);
  BOOST_TEST(args.period == 3);
  BOOST_TEST(args.save_dir == "/tmp/s");
  BOOST_TEST(args.model_state_save_dir.value() == "/tmp/m");
  BOOST_TEST(args.load_dir.value() == "/tmp/l");
  BOOST_TEST(args.load_filename.value() == "f.pt");
  BOOST_TEST(args.file_prefix == "run");
  BOOST_TEST(args.file_ext == "tar");
  BOOST_TEST(args.log_level == "debug");
  BOOST_TEST(args.async);
}

BOOST_AUTO_TEST_CASE(every_policy_flag_binds_its_field_from_the_command_line_and_a_file) {
  const DefaultCheckpointerArguments defaults;
  BOOST_TEST(defaults.every_n_train_steps == 0);
  BOOST_TEST(defaults.train_time_interval == 0.0);
  BOOST_TEST(defaults.save_on_signal);
  BOOST_TEST(defaults.keep_last_n == 0);
  BOOST_TEST(defaults.save_top_k == 0);
  BOOST_TEST(defaults.mode == "min");
  BOOST_TEST(defaults.latest_pointer);
  BOOST_TEST(!defaults.save_weights_only);
  BOOST_TEST(defaults.strict_registered_state);
  BOOST_TEST(defaults.disk_margin_mb == 1.0);
  const auto check = [](const DefaultCheckpointerArguments& args) {
    BOOST_TEST(args.every_n_train_steps == 50);
    BOOST_TEST(args.train_time_interval == 1.5);
    BOOST_TEST(!args.save_on_signal);
    BOOST_TEST(args.keep_last_n == 3);
    BOOST_TEST(args.save_top_k == 2);
    BOOST_TEST(args.monitor == "val_acc");
    BOOST_TEST(args.mode == "max");
    BOOST_TEST(!args.latest_pointer);
    BOOST_TEST(args.save_weights_only);
    BOOST_TEST(!args.strict_registered_state);
    BOOST_TEST(args.disk_margin_mb == 64.0);
  };
  check(parse({"--chkp.every_n_train_steps", "50", "--chkp.train_time_interval", "1.5",
               "--chkp.save_on_signal", "false", "--chkp.keep_last_n", "3", "--chkp.save_top_k",
               "2", "--chkp.monitor", "val_acc", "--chkp.mode", "max", "--chkp.latest_pointer",
               "no", "--chkp.save_weights_only", "yes", "--chkp.strict_registered_state", "0",
               "--chkp.disk_margin_mb", "64"}));
  TempDir dir;
  const auto config = dir.path() / "run.ini";
  std::ofstream(config) << "[chkp]\nevery_n_train_steps = 50\ntrain_time_interval = 1.5\n"
                           "save_on_signal = false\nkeep_last_n = 3\nsave_top_k = 2\n"
                           "monitor = val_acc\nmode = max\nlatest_pointer = off\n"
                           "save_weights_only = true\nstrict_registered_state = no\n"
                           "disk_margin_mb = 64\n";
  check(parse({}, config.string()));
}

BOOST_AUTO_TEST_CASE(bools_accept_true_false_yes_no_1_0) {
  for (const auto& [text, value] : std::vector<std::pair<std::string, bool>>{
           {"true", true}, {"false", false}, {"yes", true}, {"no", false}, {"1", true}, {"0", false}}) {
    BOOST_TEST(parse({"--chkp.checkpoint", text}).checkpoint == value, text);
  }
}

BOOST_AUTO_TEST_CASE(config_file_sits_between_defaults_and_command_line) {
  TempDir dir;
  ckpt::test::write_text(dir / "run.ini",
                         "[chkp]\nperiod = 4\nfile_prefix = fromfile\ncheckpoint = no\n"
                         "load_dir = /data/runs\n");
  const auto from_file = parse({}, (dir / "run.ini").string());
  BOOST_TEST(from_file.period == 4);
  BOOST_TEST(from_file.file_prefix == "fromfile");
  BOOST_TEST(!from_file.checkpoint);
  BOOST_TEST(from_file.load_dir.value() == "/data/runs");
  BOOST_TEST(from_file.file_ext == "pt");  // untouched: default
  const auto overridden =
      parse({"--chkp.period", "7", "--chkp.load_dir", "/x"}, (dir / "run.ini").string());
  BOOST_TEST(overridden.period == 7);
  BOOST_TEST(overridden.file_prefix == "fromfile");
  BOOST_TEST(overridden.load_dir.value() == "/x");
}

BOOST_AUTO_TEST_CASE(custom_prefix) {
  DefaultCheckpointerArguments args;
  po::options_description desc;
  desc.add(ckpt::default_checkpointer_options(args, "ckp"));
  const char* argv[] = {"program", "--ckp.period", "6"};
  po::variables_map vm;
  po::store(po::parse_command_line(3, argv, desc), vm);
  po::notify(vm);
  BOOST_TEST(args.period == 6);
}

BOOST_AUTO_TEST_CASE(bad_values_name_the_flag_and_the_value) {
  BOOST_CHECK_EXCEPTION(parse({"--chkp.period", "often"}), po::error,
                        [](const po::error& e) { return names(e, "--chkp.period", "often"); });
  BOOST_CHECK_EXCEPTION(parse({"--chkp.checkpoint", "maybe"}), po::error,
                        [](const po::error& e) { return names(e, "--chkp.checkpoint", "maybe"); });
  BOOST_CHECK_EXCEPTION(parse({"--chkp.nonsense", "1"}), po::error,
                        [](const po::error& e) { return names(e, "chkp.nonsense", ""); });
  TempDir dir;
  ckpt::test::write_text(dir / "bad.ini", "[chkp]\nperiod = twice\n");
  BOOST_CHECK_EXCEPTION(parse({}, (dir / "bad.ini").string()), po::error,
                        [](const po::error& e) { return names(e, "chkp.period", "twice"); });
  // Range errors surface at validation, naming the field and value.
  auto args = parse({"--chkp.period", "0"});
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        ckpt::test::message_contains("period", "0"));
}

BOOST_AUTO_TEST_CASE(a_programs_presets_are_the_defaults) {
  DefaultCheckpointerArguments preset;
  preset.save_dir = "/runs/preset";
  preset.period = 5;
  preset.keep_last_n = 3;
  preset.async = true;
  preset.disk_margin_mb = 2.5;
  preset.monitor = "val_acc";
  preset.load_dir = "/runs/earlier";
  preset.model_state_save_dir = "/runs/weights";

  // An empty command line keeps every preset (notify used to write the library's defaults).
  auto args = parse({}, "", preset);
  BOOST_TEST(args.save_dir == "/runs/preset");
  BOOST_TEST(args.period == 5);
  BOOST_TEST(args.keep_last_n == 3);
  BOOST_TEST(args.async);
  BOOST_TEST(args.disk_margin_mb == 2.5);
  BOOST_TEST(args.monitor == "val_acc");
  BOOST_TEST(args.load_dir.value() == "/runs/earlier");
  BOOST_TEST(args.model_state_save_dir.value() == "/runs/weights");
  BOOST_TEST(args.file_prefix == "model");  // not preset: the library's default

  // The command line and a config file still win over a preset.
  TempDir dir;
  ckpt::test::write_text(dir / "run.ini", "[chkp]\nkeep_last_n = 7\n");
  args = parse({"--chkp.period", "2", "--chkp.save_dir", "/runs/flag", "--chkp.async", "false",
                "--chkp.load_dir", "/runs/other"},
               (dir / "run.ini").string(), preset);
  BOOST_TEST(args.period == 2);
  BOOST_TEST(args.save_dir == "/runs/flag");
  BOOST_TEST(!args.async);
  BOOST_TEST(args.keep_last_n == 7);
  BOOST_TEST(args.load_dir.value() == "/runs/other");

  // --help shows the presets as the defaults.
  std::ostringstream help;
  help << ckpt::default_checkpointer_options(preset);
  for (const char* shown : {"--chkp.save_dir arg (=/runs/preset)", "--chkp.period arg (=5)",
                            "--chkp.keep_last_n arg (=3)", "--chkp.async arg (=true)",
                            "--chkp.disk_margin_mb arg (=2.5)", "--chkp.load_dir arg (=/runs/earlier)",
                            "--chkp.model_state_save_dir arg (=/runs/weights)"}) {
    BOOST_CHECK_MESSAGE(help.str().find(shown) != std::string::npos,
                        "help lacks '" << shown << "':\n" << help.str());
  }
}

BOOST_AUTO_TEST_CASE(model_state_save_dir_follows_save_dir_unless_set) {
  auto args = parse({"--chkp.save_dir", "/runs/a"});
  BOOST_TEST(!args.model_state_save_dir.has_value());
  BOOST_TEST(args.model_weights_dir() == "/runs/a");
  args = parse({"--chkp.save_dir", "/runs/a", "--chkp.model_state_save_dir", "/runs/w"});
  BOOST_TEST(args.model_weights_dir() == "/runs/w");
  // Empty disables the weights, as before.
  args = parse({"--chkp.save_dir", "/runs/a", "--chkp.model_state_save_dir", ""});
  BOOST_TEST(args.model_state_save_dir.value().empty());
  BOOST_TEST(args.model_weights_dir().empty());
  // Stored in the hyperparameters as set: None while it follows save_dir.
  BOOST_TEST(ckpt::options_state(parse({})).at("chkp.model_state_save_dir").isNone());
}

BOOST_AUTO_TEST_SUITE_END()
