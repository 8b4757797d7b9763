/* libarchive through the lazily loaded table; see dynlib.h. */
#ifndef MYRMEX_ARCHIVE_API_H
#define MYRMEX_ARCHIVE_API_H

#include <archive.h>
#include <archive_entry.h>

#include "dynlib.h"

// clang-format off
#define MX_ARCHIVE_FUNCS(X) \
  X(archive_entry_copy_hardlink) X(archive_entry_copy_pathname) X(archive_entry_copy_stat)     \
  X(archive_entry_filetype) X(archive_entry_free) X(archive_entry_gid) X(archive_entry_gname)  \
  X(archive_entry_hardlink) X(archive_entry_linkify) X(archive_entry_linkresolver_free)        \
  X(archive_entry_linkresolver_new) X(archive_entry_linkresolver_set_strategy)                 \
  X(archive_entry_mtime) X(archive_entry_new) X(archive_entry_pathname) X(archive_entry_perm)  \
  X(archive_entry_set_filetype) X(archive_entry_set_gid) X(archive_entry_set_hardlink)         \
  X(archive_entry_set_mtime) X(archive_entry_set_nlink) X(archive_entry_set_pathname)          \
  X(archive_entry_set_perm) X(archive_entry_set_size) X(archive_entry_set_symlink)             \
  X(archive_entry_set_uid) X(archive_entry_size) X(archive_entry_size_is_set)                  \
  X(archive_entry_symlink) X(archive_entry_uid) X(archive_entry_uname)                         \
  X(archive_error_string) X(archive_filter_bytes) X(archive_read_data)                         \
  X(archive_read_data_block) X(archive_read_free) X(archive_read_new)                          \
  X(archive_read_next_header) X(archive_read_open) X(archive_read_open_filename)               \
  X(archive_read_support_filter_all) X(archive_read_support_format_gnutar)                     \
  X(archive_read_support_format_tar) X(archive_set_error) X(archive_write_add_filter_gzip)     \
  X(archive_write_add_filter_zstd) X(archive_write_close) X(archive_write_data)                \
  X(archive_write_data_block) X(archive_write_disk_new) X(archive_write_disk_set_options)      \
  X(archive_write_finish_entry) X(archive_write_free) X(archive_write_header)                  \
  X(archive_write_new) X(archive_write_open2) X(archive_write_open_fd)                         \
  X(archive_write_set_bytes_in_last_block) X(archive_write_set_format_gnutar)                  \
  X(archive_write_set_format_pax_restricted) X(archive_write_set_format_ustar)
// clang-format on

struct mx_archive_api {
#define MX_FIELD(f) __typeof__(f) *f;
  MX_ARCHIVE_FUNCS(MX_FIELD)
#undef MX_FIELD
};
extern struct mx_archive_api mx_archive;

#ifndef MX_DYNLIB_IMPL
#define archive_entry_copy_hardlink (*mx_archive.archive_entry_copy_hardlink)
#define archive_entry_copy_pathname (*mx_archive.archive_entry_copy_pathname)
#define archive_entry_copy_stat (*mx_archive.archive_entry_copy_stat)
#define archive_entry_filetype (*mx_archive.archive_entry_filetype)
#define archive_entry_free (*mx_archive.archive_entry_free)
#define archive_entry_gid (*mx_archive.archive_entry_gid)
#define archive_entry_gname (*mx_archive.archive_entry_gname)
#define archive_entry_hardlink (*mx_archive.archive_entry_hardlink)
#define archive_entry_linkify (*mx_archive.archive_entry_linkify)
#define archive_entry_linkresolver_free (*mx_archive.archive_entry_linkresolver_free)
#define archive_entry_linkresolver_new (*mx_archive.archive_entry_linkresolver_new)
#define archive_entry_linkresolver_set_strategy                                                    \
  (*mx_archive.archive_entry_linkresolver_set_strategy)
#define archive_entry_mtime (*mx_archive.archive_entry_mtime)
#define archive_entry_new (*mx_archive.archive_entry_new)
#define archive_entry_pathname (*mx_archive.archive_entry_pathname)
#define archive_entry_perm (*mx_archive.archive_entry_perm)
#define archive_entry_set_filetype (*mx_archive.archive_entry_set_filetype)
#define archive_entry_set_gid (*mx_archive.archive_entry_set_gid)
#define archive_entry_set_hardlink (*mx_archive.archive_entry_set_hardlink)
#define archive_entry_set_mtime (*mx_archive.archive_entry_set_mtime)
#define archive_entry_set_nlink (*mx_archive.archive_entry_set_nlink)
#define archive_entry_set_pathname (*mx_archive.archive_entry_set_pathname)
#define archive_entry_set_perm (*mx_archive.archive_entry_set_perm)
#define archive_entry_set_size (*mx_archive.archive_entry_set_size)
#define archive_entry_set_symlink (*mx_archive.archive_entry_set_symlink)
#define archive_entry_set_uid (*mx_archive.archive_entry_set_uid)
#define archive_entry_size (*mx_archive.archive_entry_size)
#define archive_entry_size_is_set (*mx_archive.archive_entry_size_is_set)
#define archive_entry_symlink (*mx_archive.archive_entry_symlink)
#define archive_entry_uid (*mx_archive.archive_entry_uid)
#define archive_entry_uname (*mx_archive.archive_entry_uname)
#define archive_error_string (*mx_archive.archive_error_string)
#define archive_filter_bytes (*mx_archive.archive_filter_bytes)
#define archive_read_data (*mx_archive.archive_read_data)
#define archive_read_data_block (*mx_archive.archive_read_data_block)
#define archive_read_free (*mx_archive.archive_read_free)
#define archive_read_new (*mx_archive.archive_read_new)
#define archive_read_next_header (*mx_archive.archive_read_next_header)
#define archive_read_open (*mx_archive.archive_read_open)
#define archive_read_open_filename (*mx_archive.archive_read_open_filename)
#define archive_read_support_filter_all (*mx_archive.archive_read_support_filter_all)
#define archive_read_support_format_gnutar (*mx_archive.archive_read_support_format_gnutar)
#define archive_read_support_format_tar (*mx_archive.archive_read_support_format_tar)
#define archive_set_error (*mx_archive.archive_set_error)
#define archive_write_add_filter_gzip (*mx_archive.archive_write_add_filter_gzip)
#define archive_write_add_filter_zstd (*mx_archive.archive_write_add_filter_zstd)
#define archive_write_close (*mx_archive.archive_write_close)
#define archive_write_data (*mx_archive.archive_write_data)
#define archive_write_data_block (*mx_archive.archive_write_data_block)
#define archive_write_disk_new (*mx_archive.archive_write_disk_new)
#define archive_write_disk_set_options (*mx_archive.archive_write_disk_set_options)
#define archive_write_finish_entry (*mx_archive.archive_write_finish_entry)
#define archive_write_free (*mx_archive.archive_write_free)
#define archive_write_header (*mx_archive.archive_write_header)
#define archive_write_new (*mx_archive.archive_write_new)
#define archive_write_open2 (*mx_archive.archive_write_open2)
#define archive_write_open_fd (*mx_archive.archive_write_open_fd)
#define archive_write_set_bytes_in_last_block (*mx_archive.archive_write_set_bytes_in_last_block)
#define archive_write_set_format_gnutar (*mx_archive.archive_write_set_format_gnutar)
#define archive_write_set_format_pax_restricted                                                    \
  (*mx_archive.archive_write_set_format_pax_restricted)
#define archive_write_set_format_ustar (*mx_archive.archive_write_set_format_ustar)
#endif

#endif
