// History mode: what each commit added, read with libgit2 (no `git` process). Like `gitleaks git`
// (`git log -p -U0`): a commit's added lines per file form one text; merge commits add nothing of
// their own; a root commit adds its whole tree.
#include <git2.h>

#include <ctime>
#include <map>
#include <mutex>

#include "scan/engine.hpp"

namespace cutover::scan {

namespace fs = std::filesystem;
using core::Error;
using core::Result;

namespace {

std::string git_failure(const std::string& what) {
  const ::git_error* e = git_error_last();
  return what + ": " + (e != nullptr && e->message != nullptr ? e->message : "libgit2 error");
}

// Frees a libgit2 object at scope exit.
template <typename T, void (*Free)(T*)>
struct GitPtr {
  T* p = nullptr;
  GitPtr() = default;
  GitPtr(const GitPtr&) = delete;
  GitPtr& operator=(const GitPtr&) = delete;
  ~GitPtr() {
    if (p != nullptr) Free(p);
  }
};

struct FileAdditions {
  std::string text;
  std::vector<int> new_lines;  // file line of each line of text
  bool binary = false;
};

struct DiffPayload {
  std::map<std::string, FileAdditions> files;
};

int on_file(const git_diff_delta* delta, float /*progress*/, void* payload) {
  auto* p = static_cast<DiffPayload*>(payload);
  if (delta->new_file.path == nullptr) return 0;
  auto& f = p->files[delta->new_file.path];
  if ((delta->flags & GIT_DIFF_FLAG_BINARY) != 0) f.binary = true;
  return 0;
}

int on_line(const git_diff_delta* delta, const git_diff_hunk* /*hunk*/, const git_diff_line* line,
            void* payload) {
  if (line->origin != GIT_DIFF_LINE_ADDITION || delta->new_file.path == nullptr) return 0;
  auto& f = static_cast<DiffPayload*>(payload)->files[delta->new_file.path];
  f.text.append(line->content, line->content_len);
  if (f.text.empty() || f.text.back() != '\n') f.text += '\n';
  f.new_lines.push_back(line->new_lineno);
  return 0;
}

std::string iso_time(const git_time& t) {
  std::time_t secs = static_cast<std::time_t>(t.time);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

bool has_commit(const fs::path& repo_path, const std::string& rev) {
  static std::once_flag once;
  std::call_once(once, [] { git_libgit2_init(); });
  GitPtr<git_repository, git_repository_free> repo;
  if (git_repository_open_ext(&repo.p, repo_path.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr) !=
      0) {
    return false;
  }
  GitPtr<git_object, git_object_free> obj, commit;
  return git_revparse_single(&obj.p, repo.p, rev.c_str()) == 0 &&
         git_object_peel(&commit.p, obj.p, GIT_OBJECT_COMMIT) == 0;
}

Result<ScanReport> Scanner::scan_history(const fs::path& repo_path,
                                         const std::optional<std::string>& since,
                                         const std::optional<std::string>& until) const {
  static std::once_flag once;
  std::call_once(once, [] { git_libgit2_init(); });

  GitPtr<git_repository, git_repository_free> repo;
  if (git_repository_open_ext(&repo.p, repo_path.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr) !=
      0) {
    return Error(git_failure(repo_path.string() + ": not a git repository"));
  }
  GitPtr<git_revwalk, git_revwalk_free> walk;
  if (git_revwalk_new(&walk.p, repo.p) != 0) return Error(git_failure("revwalk"));
  git_revwalk_sorting(walk.p, GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME);
  ScanReport report;
  if (until) {
    GitPtr<git_object, git_object_free> obj;
    if (git_revparse_single(&obj.p, repo.p, until->c_str()) != 0) {
      return Error(git_failure(*until + ": unknown revision"));
    }
    GitPtr<git_object, git_object_free> commit;
    if (git_object_peel(&commit.p, obj.p, GIT_OBJECT_COMMIT) != 0) {
      return Error(git_failure(*until + ": not a commit"));
    }
    if (git_revwalk_push(walk.p, git_object_id(commit.p)) != 0) return Error(git_failure(*until));
  } else {
    if (git_repository_head_unborn(repo.p) == 1) return report;  // no commits yet: nothing added
    if (git_revwalk_push_head(walk.p) != 0) return Error(git_failure("HEAD"));
  }
  if (since) {
    GitPtr<git_object, git_object_free> obj;
    if (git_revparse_single(&obj.p, repo.p, since->c_str()) != 0) {
      return Error(git_failure("--since " + *since + ": unknown revision"));
    }
    GitPtr<git_object, git_object_free> commit;
    if (git_object_peel(&commit.p, obj.p, GIT_OBJECT_COMMIT) != 0) {
      return Error(git_failure("--since " + *since + ": not a commit"));
    }
    if (git_revwalk_hide(walk.p, git_object_id(commit.p)) != 0) {
      return Error(git_failure("--since " + *since));
    }
  }

  ScratchHolder scratch(impl_->clone_scratch());
  git_oid oid;
  while (git_revwalk_next(&oid, walk.p) == 0) {
    GitPtr<git_commit, git_commit_free> commit;
    if (git_commit_lookup(&commit.p, repo.p, &oid) != 0) return Error(git_failure("commit"));
    ++report.stats.commits_scanned;
    if (git_commit_parentcount(commit.p) > 1) continue;
    GitPtr<git_tree, git_tree_free> tree, parent_tree;
    if (git_commit_tree(&tree.p, commit.p) != 0) return Error(git_failure("tree"));
    if (git_commit_parentcount(commit.p) == 1) {
      GitPtr<git_commit, git_commit_free> parent;
      if (git_commit_parent(&parent.p, commit.p, 0) != 0 ||
          git_commit_tree(&parent_tree.p, parent.p) != 0) {
        return Error(git_failure("parent tree"));
      }
    }
    git_diff_options opts = GIT_DIFF_OPTIONS_INIT;
    opts.context_lines = 0;
    GitPtr<git_diff, git_diff_free> diff;
    if (git_diff_tree_to_tree(&diff.p, repo.p, parent_tree.p, tree.p, &opts) != 0) {
      return Error(git_failure("diff"));
    }
    DiffPayload payload;
    if (git_diff_foreach(diff.p, on_file, nullptr, nullptr, on_line, &payload) != 0) {
      return Error(git_failure("diff"));
    }
    char sha[GIT_OID_HEXSZ + 1];
    git_oid_tostr(sha, sizeof sha, &oid);
    const git_signature* author = git_commit_author(commit.p);
    const char* message = git_commit_message(commit.p);
    for (auto& entry : payload.files) {
      // Not a structured binding: clang 14 cannot capture one in the lambda below.
      const std::string& path = entry.first;
      FileAdditions& add = entry.second;
      if (add.binary || add.text.empty()) continue;
      if (add.text.size() > impl_->options.max_file_size) {
        ++report.stats.skipped_large;
        continue;
      }
      ++report.stats.files_scanned;
      report.stats.bytes_scanned += add.text.size();
      for (auto& f : impl_->scan(add.text, path, sha, scratch.get())) {
        const auto map_line = [&](int l) {
          return l >= 1 && static_cast<size_t>(l) <= add.new_lines.size()
                     ? add.new_lines[static_cast<size_t>(l) - 1]
                     : l;
        };
        f.start_line = map_line(f.start_line);
        f.end_line = map_line(f.end_line);
        f.author = author != nullptr && author->name != nullptr ? author->name : "";
        f.email = author != nullptr && author->email != nullptr ? author->email : "";
        f.date = author != nullptr ? iso_time(author->when) : "";
        f.message = message != nullptr ? message : "";
        while (!f.message.empty() && f.message.back() == '\n') f.message.pop_back();
        report.findings.push_back(std::move(f));
      }
    }
  }
  sort_findings(report.findings);
  return report;
}

}  // namespace cutover::scan
