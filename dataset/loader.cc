// TokenWindowLoader: document split, per-epoch shuffles, window cutting across epoch boundaries
// and state/restore (see loader.h). Tested in tests/dataset/loader_test.cc (windows against a
// hand-built stream, bit-exact resume, epoch reshuffles, validation pass, errors).
#include "dataset/loader.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dataset/metadata.h"
#include "dataset/random.h"

namespace loom::data {

using core::ErrorCode;

namespace {

// Stream ids for mix_seed: the split and the epoch shuffles draw from unrelated streams.
constexpr uint64_t kSplitStream = 0x5b117;
constexpr uint64_t kEpochStream = 0xe90c4;
constexpr const char* kStateFormat = "loom.token_window_loader.v1";

}  // namespace

void TokenWindowLoader::set_docs(const IndexedDataset& ds, std::vector<int64_t> docs,
                                 DocOrder& order) {
  order.starts.resize(docs.size());
  order.tokens = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    order.starts[i] = order.tokens;
    order.tokens += ds.document_length(docs[i]);
  }
  order.docs = std::move(docs);
}

core::Status TokenWindowLoader::split_documents() {
  const double f = opt_.train_fraction;
  if (!(f > 0.0 && f <= 1.0)) {
    return core::error(ErrorCode::kInvalidArgument, "--split {} must be in (0, 1] (fraction of "
                       "documents used for training, e.g. 0.99)", f);
  }
  const int64_t n = ds_->num_documents();
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  Rng rng(mix_seed(opt_.seed, kSplitStream));
  shuffle_in_place(all, rng);
  const auto n_train = f == 1.0 ? n : static_cast<int64_t>(std::floor(f * static_cast<double>(n)));
  if (n_train == 0) {
    return core::error(ErrorCode::kInvalidArgument, "--split {} of the {} documents in {} leaves "
                       "no training document", f, n, opt_.prefix);
  }
  if (f < 1.0 && n_train == n) {
    return core::error(ErrorCode::kInvalidArgument, "--split {} of the {} documents in {} leaves no "
                       "validation document; use a smaller fraction or 1 for no validation", f, n,
                       opt_.prefix);
  }
  std::vector<int64_t> train(all.begin(), all.begin() + n_train), val(all.begin() + n_train, all.end());
  std::sort(train.begin(), train.end());
  std::sort(val.begin(), val.end());
  set_docs(*ds_, std::move(train), train_);
  set_docs(*ds_, std::move(val), validation_);
  return core::ok_status();
}

core::Result<TokenWindowLoader> TokenWindowLoader::open(const LoaderOptions& opt) {
  if (opt.seq_len < 1) {
    return core::error(ErrorCode::kInvalidArgument, "seq_len {} must be at least 1", opt.seq_len);
  }
  TokenWindowLoader l;
  l.opt_ = opt;
  LOOM_ASSIGN_OR_RETURN(IndexedDataset ds, IndexedDataset::open(opt.prefix));
  l.ds_ = std::make_shared<const IndexedDataset>(std::move(ds));
  LOOM_RETURN_IF_ERROR(l.split_documents());
  if (l.train_.tokens < opt.seq_len + 1) {
    return core::error(ErrorCode::kInvalidArgument, "--seq {} is longer than the training data: {} "
                       "has {} training tokens, a window needs seq + 1 = {}", opt.seq_len,
                       opt.prefix, l.train_.tokens, opt.seq_len + 1);
  }
  if (opt.train_fraction < 1.0 && l.validation_.tokens < opt.seq_len + 1) {
    return core::error(ErrorCode::kInvalidArgument, "--seq {}: the validation split of {} ({} "
                       "documents, {} tokens) holds no window of seq + 1 tokens; lower --split or "
                       "--seq", opt.seq_len, opt.prefix, l.validation_.docs.size(),
                       l.validation_.tokens);
  }
  auto meta = read_metadata(opt.prefix);
  if (meta.ok() && meta->contains("vocab_size") && (*meta)["vocab_size"].is_number_integer()) {
    l.metadata_vocab_ = (*meta)["vocab_size"].get<int64_t>();
  }
  return l;
}

const TokenWindowLoader::DocOrder& TokenWindowLoader::epoch_order(int64_t epoch) {
  for (auto& c : epoch_cache_) {
    if (c.epoch == epoch) return c;
  }
  // Replace the older of the two cached epochs.
  DocOrder& slot = epoch_cache_[0].epoch < epoch_cache_[1].epoch ? epoch_cache_[0] : epoch_cache_[1];
  std::vector<int64_t> docs = train_.docs;
  Rng rng(mix_seed(opt_.seed + static_cast<uint64_t>(epoch), kEpochStream));
  shuffle_in_place(docs, rng);
  set_docs(*ds_, std::move(docs), slot);
  slot.epoch = epoch;
  return slot;
}

void TokenWindowLoader::copy_from(const DocOrder& order, int64_t offset, int64_t count,
                                  int32_t* out) const {
  // The document holding `offset`: the last one starting at or before it (skips empty ones).
  auto it = std::upper_bound(order.starts.begin(), order.starts.end(), offset);
  auto i = static_cast<size_t>(std::distance(order.starts.begin(), it) - 1);
  while (count > 0) {
    const int64_t doc = order.docs[i];
    const int64_t in_doc = offset - order.starts[i];
    const int64_t n = std::min(ds_->document_length(doc) - in_doc, count);
    if (n > 0) ds_->read(doc, in_doc, n, out);
    out += n, offset += n, count -= n;
    ++i;
  }
}

void TokenWindowLoader::copy_train(int64_t position, int64_t count, int32_t* out) {
  while (count > 0) {
    const int64_t epoch = position / train_.tokens;
    const int64_t offset = position % train_.tokens;
    const int64_t n = std::min(train_.tokens - offset, count);  // stay inside this epoch
    copy_from(epoch_order(epoch), offset, n, out);
    out += n, position += n, count -= n;
  }
}

std::vector<int32_t> TokenWindowLoader::next_batch(int64_t batch) {
  const int64_t window = opt_.seq_len + 1;
  std::vector<int32_t> tokens(static_cast<size_t>(std::max<int64_t>(batch, 0) * window));
  for (int64_t b = 0; b < batch; ++b) {
    copy_train(position_, window, tokens.data() + b * window);
    position_ += opt_.seq_len;  // stride seq: the last target of a window is the next one's first input
  }
  return tokens;
}

int64_t TokenWindowLoader::validation_windows() const {
  return validation_.tokens > opt_.seq_len ? (validation_.tokens - 1) / opt_.seq_len : 0;
}

std::vector<std::vector<int32_t>> TokenWindowLoader::validation_batches(int64_t batch,
                                                                        int64_t max_batches) const {
  std::vector<std::vector<int32_t>> out;
  if (batch < 1) return out;
  int64_t n = validation_windows() / batch;
  if (max_batches > 0) n = std::min(n, max_batches);
  const int64_t window = opt_.seq_len + 1;
  for (int64_t k = 0; k < n; ++k) {
    std::vector<int32_t> tokens(static_cast<size_t>(batch * window));
    for (int64_t b = 0; b < batch; ++b) {
      copy_from(validation_, (k * batch + b) * opt_.seq_len, window, tokens.data() + b * window);
    }
    out.push_back(std::move(tokens));
  }
  return out;
}

nlohmann::json TokenWindowLoader::state() const {
  return {{"format", kStateFormat},
          {"position", position_},
          {"epoch", epoch()},
          {"offset_in_epoch", position_ % train_.tokens},
          {"seed", opt_.seed},
          {"seq_len", opt_.seq_len},
          {"train_fraction", opt_.train_fraction},
          {"train_tokens", train_.tokens},
          {"train_documents", train_documents()}};
}

core::Status TokenWindowLoader::restore(const nlohmann::json& s) {
  const nlohmann::json expected = state();
  if (!s.is_object() || s.value("format", "") != kStateFormat || !s.contains("position") ||
      !s["position"].is_number_integer() || s["position"].get<int64_t>() < 0) {
    return core::error(ErrorCode::kInvalidArgument, "loader state {} is not a {} state with a "
                       "non-negative \"position\"", s.dump(), kStateFormat);
  }
  // The position only means the same tokens with the same seed, window and split.
  for (const char* key : {"seed", "seq_len", "train_fraction", "train_tokens", "train_documents"}) {
    if (!s.contains(key) || s[key] != expected[key]) {
      return core::error(ErrorCode::kInvalidArgument, "loader state field \"{}\" is {} but this "
                         "loader has {} (resume with the same data, --seed, --seq and --split)", key,
                         s.contains(key) ? s[key].dump() : "missing", expected[key].dump());
    }
  }
  position_ = s["position"].get<int64_t>();
  return core::ok_status();
}

int64_t TokenWindowLoader::vocab_size_hint() const {
  if (metadata_vocab_) return *metadata_vocab_;
  if (!scanned_vocab_) scanned_vocab_ = ds_->max_token_id() + 1;
  return *scanned_vocab_;
}

}  // namespace loom::data
