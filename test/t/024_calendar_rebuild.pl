# Calendar periods survive a crash: the counters rebuilt from token_usage
# count each row in the calendar period it fell in (a monthly quota counts
# this month's rows only, a Berlin day the rows since Berlin midnight),
# with the limiter's clock frozen (rate_limiter.debug_clock).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('calendar_rebuild');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "restart_after_crash = on");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
# 2027-03-01 00:30 UTC (01:30 in Berlin): half an hour into March.
$node->append_conf('postgresql.conf', "rate_limiter.debug_clock = 1803861000");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
is($node->safe_psql('postgres', "SELECT to_timestamp(1803861000) AT TIME ZONE 'UTC'"),
	'2027-03-01 00:30:00', 'the frozen clock');
$node->safe_psql('postgres', q{
	SELECT set_rate_limit('monthly', 100000, '1 month');
	SELECT set_rate_limit('berlin', 100000, '1 day', period_timezone => 'Europe/Berlin');
});
# Rows of earlier periods, written as the worker would have: February's
# last hour for the monthly quota, Berlin's previous day (before 23:00
# UTC on February 28th) and its current day.
$node->safe_psql('postgres', q{
	INSERT INTO token_usage (user_id, tokens_used, priority_level, "timestamp") VALUES
	  ('monthly', 700, 'high', '2027-02-28 23:59:00+00'),
	  ('monthly', 40, 'high', '2027-03-01 00:10:00+00'),
	  ('berlin', 500, 'high', '2027-02-28 22:59:00+00'),
	  ('berlin', 60, 'high', '2027-02-28 23:01:00+00');
});
# And one live grant each, through the hot path.
$node->safe_psql('postgres', q{
	SELECT allocate_tokens(u, 5, 'high') FROM unnest(ARRAY['monthly', 'berlin']) u;
});
my $status = q{
	SELECT string_agg(u || ' ' || s.used || ' ' || to_char(s.window_start AT TIME ZONE 'UTC', 'MM-DD HH24:MI'),
	                  ', ' ORDER BY u)
	  FROM unnest(ARRAY['berlin', 'monthly']) u, LATERAL get_rate_limit_status(u) s
	 WHERE s.limit_kind = 'tokens'};
# The installation's first call rebuilt its counters from those rows.
is($node->safe_psql('postgres', $status), 'berlin 65 02-28 23:00, monthly 45 03-01 00:00',
	'live: each counter holds its current period\'s rows and the live grant');

my $offset = -s $node->logfile;
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $status), 'berlin 65 02-28 23:00, monthly 45 03-01 00:00',
	'after a crash: the rebuild counts the rows of the current periods only');
ok($node->log_contains(qr/rate_limiter: rebuilt \d+ counters/, $offset), 'the counters were rebuilt');
is($node->safe_psql('postgres', q{SELECT tokens_remaining FROM allocate_tokens('monthly', 1, 'high')}),
	'99954', 'and the quota goes on from there');

$node->stop;
done_testing();
